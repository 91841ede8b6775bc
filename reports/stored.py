"""Per-image outcomes of a run directory's stored predictions, scored exactly as its rows were.

The label-free estimates, paired tests and calibration all work on images, not on accuracies:
for one (model, setting) they need the keys, the logits on the setting's own classes (after the
class map, and for an ID view ``imagenet@imagenet-r`` only the ID images of those classes), the
argmax and, where the data has labels, the labels. :class:`StoredRun` gives that, checking each
file against the sha256 its row recorded so an edited file is never silently analysed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from harness.api import UNLABELED, Predictions, Result, ShiftSpec

#: The ID shift unlabelled folders (``folder-unlabeled``, ImageNet's label space) pair with.
UNLABELED_ID = "imagenet"


@dataclass(frozen=True)
class Outcomes:
    """One model on one setting: keys, logits on the setting's classes, predictions, labels."""

    model: str
    setting: str
    keys: np.ndarray  # [N] str
    logits: np.ndarray  # [N, K] float32, the setting's classes
    labels: np.ndarray | None  # [N] int64, None for unlabelled data
    #: ``Result.data_read()`` of the row scored: outcomes of equal keys from other images differ here.
    data: tuple | None = None

    @cached_property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        if self.labels is None:
            raise ValueError(f"{self.model} on {self.setting}: the data has no labels")
        return self.pred == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def __len__(self) -> int:
        return len(self.keys)


def align(outcomes: list[Outcomes]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The keys every outcome shares (sorted) and, per outcome, the row index of each.

    Outcomes whose cells read other data (images rewritten in place, another data root) share
    keys but not images: pairing them is refused."""
    if not outcomes:
        return np.array([], dtype=str), []
    recorded = [o for o in outcomes if o.data is not None]
    for o in recorded[1:]:
        if o.data != recorded[0].data:
            raise ValueError(
                f"{recorded[0].model} and {o.model} were predicted on {o.setting} from different data (its root, keys, "
                "labels or image files changed between their runs); rerun `shiftbench run` with both models on this "
                "run directory (the stale cells run again), then compare them"
            )
    shared = set(map(str, outcomes[0].keys))
    for o in outcomes[1:]:
        shared &= set(map(str, o.keys))
    keys = np.array(sorted(shared), dtype=str)
    index = []
    for o in outcomes:
        pos = {str(k): i for i, k in enumerate(o.keys)}
        index.append(np.fromiter((pos[k] for k in keys), dtype=np.int64, count=len(keys)))
    return keys, index


class StoredRun:
    """A run directory's rows and predictions, read lazily and verified."""

    def __init__(self, path: str | Path, data_root: str | Path | None = None) -> None:
        from harness.layout import RunLayout
        from harness.scoring import registry_specs

        self.run = RunLayout(path)
        if not self.run.path.is_dir():
            raise FileNotFoundError(f"{self.run.path}: no such run directory")
        self.rows: list[Result] = self.run.read_results()
        config = self.run.read_config()
        self.data_root = str(data_root) if data_root is not None else (config.data_root if config else "")
        self._spec_of = registry_specs(self.data_root, config.split if config else None)
        self._preds: dict[tuple[str, str], Predictions] = {}

    @property
    def path(self) -> Path:
        return self.run.path

    def spec(self, shift: str) -> ShiftSpec:
        """The shift's spec completed from its data, as the run scored it."""
        try:
            return self._spec_of(shift)
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"{exc} (completing {shift}'s spec from --data-root {self.data_root or '(none)'}; "
                            "pass --data-root with the folder this shift was run from)") from None

    def models(self) -> list[str]:
        """Every model with results or predictions, in first-seen order."""
        names = [r.model for r in self.rows]
        names += [meta.get("model", "") for _, meta in self.run.stored_predictions()]
        return [m for m in dict.fromkeys(names) if m]

    def row(self, model: str, setting: str) -> Result | None:
        found = [r for r in self.rows if r.model == model and r.setting == setting]
        return found[-1] if found else None

    def has(self, model: str, setting: str) -> bool:
        if self.row(model, setting) is not None:
            return True
        return "@" not in setting and self.run.predictions_path(model, setting).exists()

    def predictions(self, model: str, shift: str, sha256: str | None = None) -> Predictions:
        if (model, shift) not in self._preds:
            path = self.run.predictions_path(model, shift)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no predictions for {model} on {shift}; run `shiftbench run` for this cell")
            preds = Predictions.load(path)
            expected = sha256 or self.run.sidecar(model, shift).get("sha256")
            if expected and preds.sha256() != expected:
                raise ValueError(f"{path}: changed since it was written (sha256 differs); rerun the cell")
            self._preds[(model, shift)] = preds
        return self._preds[(model, shift)]

    def outcomes(self, model: str, setting: str, temperature: float = 1.0) -> Outcomes:
        """``model`` on ``setting`` (a shift or an ID view ``ref@shift``), scored as its row was."""
        from harness import metrics
        from harness.scoring import task_of_row
        from harness.scoring import view_spec as _view_spec

        row = self.row(model, setting)
        if row is None:
            if "@" in setting:
                raise FileNotFoundError(f"{self.path}: no result row for {model} on {setting}")
            preds = self.predictions(model, setting)
            if not metrics_is_unlabeled(preds):
                raise FileNotFoundError(f"{self.path}: {model} on {setting} has predictions but no result row; run `shiftbench score {self.path}`")
            # unlabelled data has no class map: the model's own label space, as its ID reference
            return Outcomes(model, setting, np.asarray(preds.keys), np.asarray(preds.logits, dtype=np.float32) / temperature, None)
        preds = self.predictions(model, row.shift, row.predictions_sha256)
        task = task_of_row(row, self.run.results_path)
        spec = self.spec(task.shift)
        if task.view_of is not None:
            ood = self.spec(task.view_of)
            assert ood.class_map is not None
            preds = metrics.id_view(preds, ood.class_map, task.setting)
            spec = _view_spec(ood, task.setting, len(preds))
        logits = metrics.shift_logits(preds, spec)
        labels = np.asarray(preds.labels, dtype=np.int64)
        return Outcomes(model, setting, np.asarray(preds.keys), logits / temperature, labels, row.data_read())

    def model_info(self, model: str) -> dict:
        """The model's provenance (``describe()``: tags, arch, alpha, WiSE-FT endpoints, ...)."""
        for r in reversed(self.rows):
            if r.model == model and (r.provenance or {}).get("model"):
                return dict(r.provenance["model"])
        for _, meta in self.run.stored_predictions():
            if meta.get("model") == model and (meta.get("stats") or {}).get("model"):
                return dict(meta["stats"]["model"])
        return {}

    def is_unlabeled(self, shift: str) -> bool:
        """Whether the stored predictions on ``shift`` are of unlabelled data (no rows, no labels)."""
        if any(r.setting == shift for r in self.rows):
            return False
        for m in self.models():
            if self.run.predictions_path(m, shift).exists():
                return metrics_is_unlabeled(self.predictions(m, shift))
        return False

    def is_id(self, setting: str) -> bool:
        """An ID setting: an ID view, or a shift that is its own (or has no) ID reference."""
        if "@" in setting:
            return True
        try:
            ref = self.spec(setting).id_reference
        except (ValueError, FileNotFoundError):
            return False
        return not ref or ref == setting

    def id_setting(self, shift: str, id_shift: str | None = None) -> str:
        """The ID setting a shift's accuracies are paired with: the ID reference on the shift's
        classes when the shift has a class map (``imagenet@imagenet-r``), else the reference.
        Unlabelled folders are in ImageNet's label space with no class map: ``imagenet``."""
        from harness.api import id_view_setting

        if self.is_unlabeled(shift):
            return id_shift or UNLABELED_ID
        spec = self.spec(shift)
        ref = id_shift or spec.id_reference
        if not ref:
            raise ValueError(f"shift {shift} has no ID reference; name one with --id (e.g. --id imagenet)")
        return id_view_setting(ref, shift) if spec.class_map is not None else ref


def metrics_is_unlabeled(preds: Predictions) -> bool:
    """Predictions of unlabelled data carry :data:`harness.api.UNLABELED` as every label."""
    labels = np.asarray(preds.labels)
    return len(labels) > 0 and bool((labels == UNLABELED).all())
