"""The submission bundle: a model card plus one model's results and per-example predictions,
packed as a deterministic ``.tar.gz`` whose ``manifest.json`` lists every member with its sha256.

Layout (format version 1)::

    manifest.json                     format, harness version, card, shifts with protocols,
                                      files (sha256, size), predictions (path, n, content sha256)
    results.jsonl                     the model's harness.api.Result rows
    predictions/<model>/<shift>.npz   harness.api.Predictions.save files, unchanged

The JSON Schemas ``reports/schemas/card.schema.json`` and ``bundle.schema.json`` define the card
and the manifest; ``reports.submission_validate`` checks a bundle against them and the data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from harness import __version__
from harness.api import Predictions, Result
from harness.strict_parse import loads_json, loads_jsonl, loads_toml

FORMAT = "shiftbench-submission"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
SCHEMA_DIR = Path(__file__).parent / "schemas"

# The leaderboard's suite: the ImageNet distribution shifts every entry must cover.
DEFAULT_REQUIRED_SHIFTS: tuple[str, ...] = (
    "imagenet",
    "imagenetv2",
    "imagenet-r",
    "imagenet-sketch",
    "imagenet-a",
    "objectnet",
)


@cache
def _validator(kind: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {
        k: json.loads((SCHEMA_DIR / f"{k}.schema.json").read_text()) for k in ("card", "bundle")
    }
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values()
    )
    return Draft202012Validator(schemas[kind], registry=registry)


def schema_errors(instance: Any, kind: str) -> list[str]:
    """One line per violation of the ``card`` or ``bundle`` schema, located by JSON path."""
    lines = []
    for err in sorted(
        _validator(kind).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
    ):
        where = "/".join(map(str, err.absolute_path)) or "(top level)"
        lines.append(f"at {where}: {err.message}")
    return lines


def load_card(path: Path) -> dict[str, Any]:
    """Read and schema-check a model card TOML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such model card; see docs/leaderboard.md for the fields"
        )
    card = loads_toml(path.read_bytes(), str(path))
    errors = schema_errors(card, "card")
    if errors:
        raise ValueError(
            f"{path}: invalid model card: " + "; ".join(errors) + " (see docs/leaderboard.md)"
        )
    return card


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_results(path: Path) -> list[Result]:
    """Result rows of a run directory's results.jsonl."""
    rows = []
    for i, row in enumerate(loads_jsonl(Path(path).read_bytes(), str(path)), 1):
        try:
            rows.append(Result.from_dict(row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} line {i}: not a result row ({exc})") from None
    return rows


def _pick_model(rows: Iterable[Result], wanted: str | None, source: Path) -> str:
    models = sorted({r.model for r in rows})
    if wanted is not None:
        if wanted not in models:
            raise ValueError(
                f"{source}: no results for model {wanted!r}; models present: {', '.join(models) or '(none)'}"
            )
        return wanted
    if len(models) != 1:
        raise ValueError(
            f"{source}: holds {len(models)} models ({', '.join(models)}); name one with run_model in the card or --model"
        )
    return models[0]


def _shift_entry(shift: str, rows: list[Result]) -> dict[str, Any]:
    own = [r for r in rows if r.setting == shift]
    if own:
        r = own[0]
        return {
            "version": r.shift_version,
            "protocol": dict(r.protocol),
            "expected_size": r.n_expected,
        }
    from harness.registry import get_shift

    spec = get_shift(shift).spec
    version = next(r.shift_version for r in rows if r.shift == shift)
    return {
        "version": version,
        "protocol": dict(spec.protocol),
        "expected_size": spec.expected_size,
    }


def _rows_for_stored_predictions(
    rows: list[Result], stored: dict[str, Predictions], sha: dict[str, str]
) -> list[Result]:
    """One row per setting: the latest one scored from the predictions now on disk (a rerun
    with another configuration appends rows; older ones no longer match any file)."""
    chosen: dict[str, Result] = {}
    for r in rows:
        if r.predictions_sha256 == sha[r.shift]:
            chosen[r.setting] = r
    return list(chosen.values())


def build_members(
    run_dir: Path, card: Mapping[str, Any], model: str | None = None, allow_incomplete: bool = False
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and member bytes of a bundle for one model of ``run_dir``.

    With ``allow_incomplete``, a model scored on fewer (or more) examples than published is
    bundled with ``"incomplete": true`` in its manifest: a trial bundle that ``validate`` and
    ``leaderboard`` refuse unless they are asked to accept such bundles too."""
    from harness.layout import RunLayout

    run = RunLayout(run_dir)
    if not run.results_path.is_file():
        raise FileNotFoundError(
            f"{run.results_path}: not found; is {run_dir} a run directory written by `shiftbench run`?"
        )
    all_rows = read_results(run.results_path)
    model = _pick_model(all_rows, model or card.get("run_model"), run.results_path)
    rows = [r for r in all_rows if r.model == model]
    stored: dict[str, Predictions] = {}
    files: dict[str, bytes] = {}
    for shift in sorted({r.shift for r in rows}):
        path = run.predictions_path(model, shift)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: predictions missing for {model} on {shift}; rerun `shiftbench run` to complete the cell"
            )
        stored[shift] = Predictions.load(path)
        files[path.relative_to(run.path).as_posix()] = path.read_bytes()
    sha = {shift: p.sha256() for shift, p in stored.items()}
    rows = _rows_for_stored_predictions(rows, stored, sha)
    if not rows:
        raise ValueError(
            f"{run.results_path}: no result row of {model} matches its stored predictions; rerun `shiftbench score {run_dir}`"
        )
    members: dict[str, bytes] = {
        RESULTS: "".join(r.to_json() + "\n" for r in rows).encode(),
        **files,
    }
    predictions = {
        shift: {
            "path": run.predictions_path(model, shift).relative_to(run.path).as_posix(),
            "n": len(p),
            "sha256": sha[shift],
        }
        for shift, p in stored.items()
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "harness_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "card": dict(card),
        "shifts": {s: _shift_entry(s, rows) for s in sorted(stored)},
        "files": {
            name: {"sha256": sha256_bytes(data), "size": len(data)}
            for name, data in sorted(members.items())
        },
        "predictions": predictions,
    }
    if allow_incomplete and any(r.n != r.n_expected for r in rows):
        manifest["incomplete"] = True
    return manifest, members


def pack(manifest: Mapping[str, Any], members: Mapping[str, bytes], out: Path) -> Path:
    """Write a deterministic .tar.gz (sorted members, zeroed times and owners) atomically."""
    from harness.files import atomic_file

    out = Path(out)
    entries = {MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode(), **members}
    with atomic_file(out) as raw:
        with (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in [MANIFEST, *sorted(members)]:
                data = entries[name]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return out


def write_bundle(
    run_dir: Path,
    card: Mapping[str, Any],
    out: Path,
    model: str | None = None,
    allow_incomplete: bool = False,
) -> dict[str, Any]:
    """Package one model of a run directory with its card into ``out``; returns the manifest."""
    manifest, members = build_members(run_dir, card, model, allow_incomplete)
    pack(manifest, members, out)
    return manifest


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest of a bundle, strictly parsed (schema checks are the validator's)."""
    manifest = loads_json(data, MANIFEST)
    if not isinstance(manifest, dict):
        raise ValueError(f"{MANIFEST}: must be a JSON object")
    return manifest
