"""Is a shift's data present and complete? The report behind ``shiftbench check-data``.

:func:`require_complete` is what a run calls before any model sees the data: partial or wrong
data is an error naming what is wrong, never a silently smaller evaluation.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.api import Shift
from shifts import wds
from shifts.base import DatasetShift


@dataclass
class DataReport:
    shift: str
    split: str
    found: bool
    form: str | None = None
    path: str | None = None
    looked: list[str] = field(default_factory=list)
    homepage: str = ""
    n: int = 0
    n_expected: int | None = None
    per_class_expected: int | None = None
    class_counts: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.found and not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["complete"] = self.complete
        d["class_counts"] = {str(k): v for k, v in sorted(self.class_counts.items())}
        return d

    def summary(self) -> str:
        head = f"{self.shift} [{self.split}]"
        if not self.found:
            return f"{head}: NOT FOUND (looked in {', '.join(self.looked)}); get it from {self.homepage or 'its authors'}"
        counts = sorted(self.class_counts.values())
        spread = (
            f"{len(counts)} classes, {counts[0]}..{counts[-1]} per class"
            if counts
            else "no classes"
        )
        exp = (
            f"{self.n}/{self.n_expected}"
            if self.n_expected is not None
            else f"{self.n} (no published size)"
        )
        state = "complete" if self.complete else "INCOMPLETE: " + "; ".join(self.problems)
        return f"{head}: {self.form} at {self.path}: {exp} images, {spread}: {state}"


def check_shift(
    shift: DatasetShift,
    root: Path,
    split: str | None = None,
    deep: bool = False,
    form: str | None = None,
) -> DataReport:
    """Locate and count ``split``; with ``deep`` also decode every image and verify shard hashes.

    ``form`` ("folder" or "wds") checks that form only; by default the one a run would read.
    A plugin shift that only implements ``harness.api.Shift`` is checked through its examples."""
    if not isinstance(shift, DatasetShift):
        return _check_plain_shift(shift, root, split, deep)
    split = shift.resolve_split(split)
    spec = shift.spec
    # 0: a user dataset (folder, wds) publishes no size; its own manifest may give one below
    report = DataReport(
        spec.name, split, False, homepage=spec.homepage, n_expected=shift.expected_size(split) or None
    )
    report.per_class_expected = shift.per_class
    cands = [c for c in shift.candidates(root) if form in (None, c.form)]
    report.looked = [str(c.path) for c in cands]
    present = [c for c in cands if shift.is_present(c, split)]
    if not present:
        return report
    loc = present[0]
    report.found, report.form, report.path = True, loc.form, str(loc.path)
    try:  # from here on, anything wrong is wrong data, not missing data
        if report.n_expected is None and split == spec.default_split:
            report.n_expected = shift.spec_for(Path(root)).expected_size or None
        pairs = shift.keys_and_labels(root, split, loc.form)
    except (ValueError, FileNotFoundError) as exc:
        report.problems.append(str(exc))
        return report
    report.n = len(pairs)
    report.class_counts = dict(sorted(Counter(y for _, y in pairs).items()))
    if report.n_expected is not None and report.n != report.n_expected:
        report.problems.append(f"{report.n} images, expected {report.n_expected}")
    per = report.per_class_expected
    if per is not None:
        off = {k: v for k, v in report.class_counts.items() if v != per}
        missing = spec.num_classes - len(report.class_counts)
        if off or missing:
            report.problems.append(
                f"{len(off)} classes without {per} images and {missing} classes with none"
            )
    if deep:
        report.problems += _deep_problems(shift, root, split, loc)
    return report


def _check_plain_shift(shift: Shift, root: Path, split: str | None, deep: bool) -> DataReport:
    spec = shift.spec
    split = split or spec.default_split
    report = DataReport(
        spec.name, split, False, homepage=spec.homepage, n_expected=spec.expected_size
    )
    touch = (lambda img: img.convert("RGB")) if deep else (lambda img: None)
    try:
        labels = [ex.label for ex in shift.examples(Path(root), touch, split)]
    except FileNotFoundError as exc:
        report.looked = [str(exc)]
        return report
    except ValueError as exc:
        report.found = True
        report.problems.append(str(exc))
        return report
    report.found, report.form, report.n = True, "plugin", len(labels)
    report.class_counts = dict(sorted(Counter(int(y) for y in labels).items()))
    if report.n != spec.expected_size:
        report.problems.append(f"{report.n} images, expected {spec.expected_size}")
    return report


def _deep_problems(shift: DatasetShift, root: Path, split: str, loc) -> list[str]:
    problems = []
    if loc.form == "wds":
        manifest = loc.path / split / "manifest.json"
        if manifest.is_file():
            for s in json.loads(manifest.read_text())["shards"]:
                path = loc.path / split / s["name"]
                if wds.sha256_file(path) != s["sha256"]:
                    problems.append(
                        f"{path}: sha256 differs from {manifest}; re-download or re-pack it"
                    )
    skipped: list[str] = []
    try:
        for _ in shift.examples(
            root, split=split, form=loc.form, skip_bad_images=True, skipped=skipped
        ):
            pass
    except ValueError as exc:
        problems.append(str(exc))
    if skipped:
        problems.append(
            f"{len(skipped)} images cannot be decoded (first: {skipped[0]}); re-download them"
        )
    return problems


def require_complete(shift: DatasetShift, root: Path, split: str | None = None) -> DataReport:
    """The report if the split is found and complete; otherwise a ValueError/FileNotFoundError."""
    report = check_shift(shift, root, split)
    if not report.found:
        raise FileNotFoundError(report.summary())
    if report.problems:
        raise ValueError(
            report.summary() + ". Fix the data (or run `shiftbench check-data` for details)"
        )
    return report
