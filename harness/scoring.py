"""Scoring stored predictions into result rows: the one path the engine, ``score`` and the
submission validator share, so a row means the same wherever it was computed.

A score task is one results row. An ID view (``imagenet@imagenet-r``) scores the ID shift's
predictions through the OOD shift's class map on its classes. Every OOD row names the
setting it pairs with (:func:`harness.api.id_setting_of`) and its shift's main metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api import ClassMap, Predictions, Result, Shift, ShiftSpec, id_setting_with

SpecOf = Callable[[str], ShiftSpec]


@dataclass(frozen=True)
class ScoreTask:
    setting: str
    shift: str  # the shift whose predictions are scored
    view_of: str | None = None  # the OOD shift whose classes an ID view uses


def view_spec(ood: ShiftSpec, setting: str, n: int) -> ShiftSpec:
    """The spec an ID view is scored under: the OOD shift's classes and projection."""
    return dataclasses.replace(ood, name=setting, expected_size=n, id_reference=None, group_by=())


def score_task(
    task: ScoreTask, preds: Predictions, spec_of: SpecOf, scorer: Any
) -> tuple[Predictions, ShiftSpec, dict[str, float], dict[str, int]]:
    """Scores one task from its predictions; returns the predictions actually scored."""
    spec = spec_of(task.shift)
    if task.view_of is None:
        metrics, groups = scorer.score(preds, spec)
        return preds, spec, metrics, groups
    ood = spec_of(task.view_of)
    if ood.class_map is None:
        raise ValueError(f"{task.setting}: {task.view_of} has no class map to view {task.shift} through")
    view = scorer.id_view(preds, ood.class_map, task.setting)
    vspec = view_spec(ood, task.setting, len(view))
    metrics, groups = scorer.score(view, vspec)
    return view, vspec, metrics, groups


def view_expected_size(n_view: int, n_shift: int, expected_shift: int | None, per_class: int | None,
                       class_map: ClassMap) -> int:
    """An ID view's ``n_expected``: its size on the complete ID shift, so a view of an incomplete
    shift (``--allow-incomplete``, skipped images) is marked incomplete as the shift's own row
    is. Complete shift: the view holds all there is. Else the shift's images per class times the
    view's classes where the shift publishes that (ImageNet val: 50 x 200 for ImageNet-R), or
    an upper bound: the view's images plus all the shift lacks."""
    if expected_shift is None or n_shift >= expected_shift:
        return n_view
    if per_class:
        return int(per_class) * len(class_map.source_indices)
    return n_view + expected_shift - n_shift


def make_result(
    model: str,
    task: ScoreTask,
    scored: Predictions,
    shift_spec: ShiftSpec,
    scored_spec: ShiftSpec,
    metrics: dict[str, float],
    groups: dict[str, int],
    sha: str,
    provenance: dict[str, Any],
    n_expected: int | None = None,
    id_shift: str | None = None,
) -> Result:
    """The results row of one scored task. An OOD row records the setting it pairs with
    (``id_shift``: the run's ``--id-shift``, the ID reference of a user shift). ``n_expected``
    None: the examples scored are all there are."""
    protocol = dict(scored_spec.protocol)
    fidelity = provenance.get("decoder_fidelity")
    if fidelity not in (None, "exact-pil"):  # rows decoded otherwise than by PIL are never tabled with PIL rows
        protocol["decoder"] = fidelity
    return Result(
        model=model,
        setting=task.setting,
        shift=task.shift,
        shift_version=shift_spec.version,
        n=len(scored),
        n_expected=len(scored) if n_expected is None else n_expected,
        metrics={k: float(v) for k, v in metrics.items()},
        class_map=scored_spec.class_map.digest() if scored_spec.class_map else None,
        protocol=protocol,
        group_counts={str(k): int(v) for k, v in groups.items()},
        predictions_sha256=sha,
        provenance=provenance,
        id_setting=row_id_setting(task, shift_spec, id_shift),
        main_metric=scored_spec.main_metric,
    )


def row_id_setting(task: ScoreTask, shift_spec: ShiftSpec, id_shift: str | None = None) -> str | None:
    """The ``id_setting`` a task's row carries: none for an ID view, else the shift's pairing
    (:func:`harness.api.id_setting_with`)."""
    return None if task.view_of else id_setting_with(shift_spec, id_shift)


def task_of_row(row: Result, where: object) -> ScoreTask:
    """The scoring task a stored row came from: ``imagenet@imagenet-r`` is the ID view of
    ``imagenet``'s predictions on ImageNet-R's classes."""
    if row.setting == row.shift:
        return ScoreTask(row.setting, row.shift)
    prefix = row.shift + "@"
    if not row.setting.startswith(prefix):
        raise ValueError(f"{where}: setting {row.setting!r} does not belong to shift {row.shift!r}")
    return ScoreTask(row.setting, row.shift, row.setting[len(prefix) :])


def resolve_split(shift: Shift, split: str | None) -> str:
    """The split to read: a fixed-split shift (``iwildcam:id_test``) always reads its own."""
    fixed = getattr(shift, "fixed_split", None)
    if isinstance(fixed, str):
        return fixed
    split = split or shift.spec.default_split
    if split not in shift.spec.splits:
        raise ValueError(f"shift {shift.spec.name!r} has no split {split!r}; it has {', '.join(shift.spec.splits)}")
    return split


def completed_spec(shift: Shift, root: str | Path, split: str | None) -> ShiftSpec:
    """The shift's spec completed from the data under ``root``. A split other than the
    default one is named in the protocol, so its rows are never tabled or fitted with the
    official split's."""
    spec = shift.spec_for(Path(root))
    chosen = resolve_split(shift, split)
    if chosen != spec.default_split:
        spec = dataclasses.replace(spec, protocol={**spec.protocol, "split": chosen})
    return spec


def registry_specs(data_root: str | Path, split: str | None = None) -> SpecOf:
    """Specs of registered shifts on ``split``, completed from the data under ``data_root``."""
    from harness.registry import get_shift

    cache: dict[str, ShiftSpec] = {}

    def spec_of(name: str) -> ShiftSpec:
        if name not in cache:
            cache[name] = completed_spec(get_shift(name), data_root, split)
        return cache[name]

    return spec_of
