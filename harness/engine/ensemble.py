"""Output-space ensembles of models already in a run directory, from their stored predictions.

No model is run: for every shift on which each member has predictions, the members' logits are
averaged by key (``models.ensembles.ensemble_predictions``), stored as the ensemble's own cell
and scored on every setting the members were scored on (ID views included), so the ensemble
is reported, submitted and rescored like any other model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from harness import __version__
from harness.api import Predictions, Result
from harness.engine.run import (
    RunLog,
    default_scorer,
    git_sha,
    make_result,
    run_specs,
    score_task,
    task_of_row,
)
from harness.engine.store import RunDir


def ensemble_name(members: list[str]) -> str:
    return "ensemble(" + "+".join(members) + ")"


def _member_predictions(run_dir: RunDir, rows: list[Result], model: str, shift: str) -> tuple[Predictions, str] | None:
    """The member's stored predictions on ``shift`` and their sha256, if they are the ones its
    rows were scored from."""
    shas = {r.predictions_sha256 for r in rows if r.model == model and r.shift == shift}
    path = run_dir.predictions_path(model, shift)
    if not shas or not path.exists():
        return None
    preds = Predictions.load(path)
    sha = preds.sha256()
    if sha not in shas:
        raise ValueError(f"{path}: changed since {model} was scored on {shift}; rerun that cell first")
    return preds, sha


def _check_same_data(rows: list[Result], members: list[str], shift: str, run_dir: RunDir) -> None:
    """The members must have read the same data: the same keys and labels are no proof (images
    rewritten in place between two members' runs keep them), their cells' identities are."""
    seen: dict[str, tuple] = {}
    for r in rows:
        if r.model in members and r.shift == shift and r.setting == shift:
            seen[r.model] = r.data_read()
    if len(set(seen.values())) > 1:
        first = next(m for m in members if m in seen)
        a, b = first, next(m for m in members if m in seen and seen[m] != seen[first])
        raise ValueError(
            f"{run_dir.results_path}: {a} and {b} were predicted on {shift} from different data (its root, keys, "
            f"labels or image files changed between their runs); rerun `shiftbench run` with every member on this "
            "run directory (the stale cells run again), then ensemble"
        )


def ensemble_run_dir(run_dir: RunDir, members: list[str], label: str | None = None, log: RunLog | None = None) -> list[Result]:
    """Adds the ensemble's predictions and rows to ``run_dir``; returns the new rows."""
    log = log or RunLog()
    if len(members) < 2 or len(set(members)) != len(members):
        raise ValueError("an ensemble needs at least two different --members")
    rows = run_dir.read_results()
    models = {r.model for r in rows}
    missing = [m for m in members if m not in models]
    if missing:
        known = ", ".join(sorted(models)) or "none"
        raise ValueError(f"{run_dir.results_path}: no results for {', '.join(missing)} (models there: {known})")
    name = label or ensemble_name(members)
    if name in members:
        raise ValueError(f"--label {name!r} is one of the members; choose another name")
    from models.ensembles import ensemble_predictions

    config = run_dir.read_config()
    spec_of = run_specs(config)
    scorer = default_scorer()
    shifts = sorted({r.shift for r in rows if r.model == members[0]})
    new: list[Result] = []
    cells: list[tuple[Predictions, str]] = []  # written once every shift is scored: a refusal writes nothing
    for shift in shifts:
        found = [_member_predictions(run_dir, rows, m, shift) for m in members]
        if any(f is None for f in found):
            lacking = [m for m, f in zip(members, found, strict=True) if f is None]
            log.event("ensemble_skipped", f"{shift}: no predictions of {', '.join(lacking)}; skipped", shift=shift, members=lacking)
            continue
        _check_same_data(rows, members, shift, run_dir)
        preds, member_shas = zip(*found, strict=True)  # type: ignore[misc]
        combined = ensemble_predictions(preds, model=name)
        cell_hash = hashlib.sha256(json.dumps(list(member_shas)).encode()).hexdigest()[:16]
        sha = combined.sha256()
        cells.append((combined, cell_hash))
        provenance: dict[str, Any] = {
            "harness_version": __version__,
            "git_sha": git_sha(),
            "config_hash": cell_hash,
            "model": {"method": "ensemble", "members": members, "members_sha256": list(member_shas)},
        }
        member_rows = sorted((r for r in rows if r.model == members[0] and r.shift == shift), key=lambda r: r.setting)
        for row in member_rows:
            task = task_of_row(row, run_dir.results_path)
            scored, scored_spec, metrics, groups = score_task(task, combined, spec_of, scorer)
            new.append(
                make_result(name, task, scored, spec_of(shift), scored_spec, metrics, groups, sha, provenance, row.n_expected,
                            config.id_shift if config else None)
            )
            log.event("scored", "", model=name, setting=task.setting, n=len(scored), metrics=metrics)
    if not new:
        raise ValueError(f"{run_dir.path}: no shift has predictions of every member ({', '.join(members)})")
    for combined, cell_hash in cells:
        run_dir.save_predictions(combined, cell_hash, {"ensemble_of": members})
    run_dir.append_results(new)
    return new
