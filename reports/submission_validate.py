"""Checks a submission bundle without trusting it: schema, hashes, counts, keys, protocols, and
every claimed metric recomputed from the bundled predictions (and, given the data, against the
dataset's own keys and labels). Each failure is one line with a code tests and tools can match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Predictions, Result, Shift, ShiftSpec, id_view_setting
from harness.strict_parse import loads_jsonl
from reports.safe_archive import DEFAULT_LIMITS, BundleError, Limits, read_bundle, read_npz
from reports.submission import (
    DEFAULT_REQUIRED_SHIFTS,
    FORMAT_VERSION,
    MANIFEST,
    RESULTS,
    parse_manifest,
    schema_errors,
    sha256_bytes,
)

# Recomputation runs the engine's own code, so claims from `shiftbench run` match exactly;
# the slack only absorbs float formatting by other writers.
TOLERANCE = 1e-9
MAX_MANIFEST = 16 << 20


@dataclass(frozen=True)
class Failure:
    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass(frozen=True)
class Score:
    """A setting's recomputed top-1 and example count (what the leaderboard ranks on)."""

    top1: float
    n: int


@dataclass
class Validation:
    path: Path
    failures: list[Failure] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Score] = field(default_factory=dict)
    #: setting -> the claimed release's published figure against the recomputed top-1
    #: (``reports.published``): shown as a mark, never a reason to reject.
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    # True only when keys and labels were checked against the dataset (a data root was given):
    # without it, labels are the bundle's word and a forged bundle can score 100%.
    labels_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, code: str, message: str) -> None:
        self.failures.append(Failure(code, message))

    def codes(self) -> list[str]:
        return [f.code for f in self.failures]


def registered_shift(name: str) -> Shift:
    """The registry's shift ``name`` (unknown names: ValueError with suggestions)."""
    from harness.registry import get_shift

    return get_shift(name)


def protocol_key(manifest: Mapping[str, Any], shifts: Iterable[str]) -> tuple[str, str]:
    """(digest, label) of the shifts' versions and protocol tags: entries compare only within one."""
    chosen = {s: manifest["shifts"][s] for s in sorted(shifts) if s in manifest.get("shifts", {})}
    canon = {s: [e["version"], sorted(e["protocol"].items())] for s, e in chosen.items()}
    digest = hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:12]
    parts = []
    for s, e in chosen.items():
        tags = ",".join(f"{k}={v}" for k, v in sorted(e["protocol"].items()))
        parts.append(f"{s} {e['version']}" + (f" [{tags}]" if tags else ""))
    return digest, "; ".join(parts)


def _fmt_n(n: int) -> str:
    return f"{n:,}"


def _hits(name: str, value: float, n: int) -> str:
    """' (12,345 of 30,000)' for accuracies, which are counts over n."""
    if name.startswith("top"):
        return f" ({_fmt_n(round(value * n))} of {_fmt_n(n)})"
    return ""


class _Check:
    """One validation run; methods append failures and never raise on bad bundle content."""

    def __init__(
        self,
        v: Validation,
        required: Sequence[str],
        get_shift: Callable[[str], Shift],
        limits: Limits,
        allow_incomplete: bool = False,
    ):
        self.allow_incomplete = allow_incomplete
        self.v = v
        self.required = list(required)
        self.get_shift = get_shift
        self.limits = limits
        self.shifts: dict[str, Shift] = {}
        self.specs: dict[str, ShiftSpec] = {}
        self.preds: dict[str, Predictions] = {}
        self.rows: list[Result] = []

    def run(self, data_root: Path | None) -> None:
        try:
            members = read_bundle(self.v.path, self.limits)
        except BundleError as exc:
            return self.v.fail(exc.code, str(exc))
        if not self.manifest(members) or not self.engine_names():
            return
        self.files(members)
        self.load_specs()
        self.load_predictions(members)
        self.load_rows(members)
        if data_root is not None:
            self.against_data(Path(data_root))
            self.v.labels_checked = True
        self.required_shifts()  # after the data completed the specs (ObjectNet: imagenet@objectnet)
        self.rows_consistent()
        self.published_checks()

    def published_checks(self) -> None:
        """Compare the recomputed scores with the published figures of the release the rows name."""
        import dataclasses

        from reports.published import published_check

        for r in self.rows:
            score = self.v.scores.get(r.setting)
            if score is None:
                continue
            scored = dataclasses.replace(r, n=score.n, metrics={"top1": score.top1})
            check = published_check((r.provenance or {}).get("model") or {}, scored)
            if check is not None:
                self.v.published[r.setting] = check

    def manifest(self, members: dict[str, bytes]) -> bool:
        if MANIFEST not in members:
            self.v.fail(
                "schema", f"{MANIFEST} missing; the bundle was not written by `shiftbench submit`"
            )
            return False
        if len(members[MANIFEST]) > MAX_MANIFEST:
            self.v.fail(
                "too-large",
                f"{MANIFEST} is over {MAX_MANIFEST >> 20} MiB; a real manifest is a few KiB",
            )
            return False
        try:
            m = parse_manifest(members[MANIFEST])
        except ValueError as exc:
            self.v.fail("malformed", str(exc))
            return False
        if isinstance(m.get("format_version"), int) and m["format_version"] != FORMAT_VERSION:
            self.v.fail(
                "format-version",
                f"{MANIFEST}: format version {m['format_version']} is not supported (this harness reads {FORMAT_VERSION}); upgrade shiftbench",
            )
            return False
        errors = schema_errors(m, "bundle")
        for line in errors:
            self.v.fail("schema", f"{MANIFEST}: {line}")
        self.v.manifest = m
        if not errors and m.get("incomplete") and not self.allow_incomplete:
            self.v.fail(
                "incomplete",
                f"{MANIFEST}: a trial bundle built with --allow-incomplete from data that is not the "
                "published test sets; refused (pass --allow-incomplete to check it as a trial)",
            )
        return not errors

    def old_name(self, name: str, protocol: Mapping[str, str], where: str) -> bool:
        """Fail (``old-name``) where ``name`` is the published tables' name of an engine setting."""
        from reports.vocabulary import legacy_setting

        new = legacy_setting(name, protocol)
        if new != name:
            self.v.fail(
                "old-name",
                f"{where}: {name!r} is the published tables' name of the engine's {new!r}; the leaderboard reads "
                f"the engine's setting names only: rebuild the bundle with `shiftbench submit` from the run "
                f"directory (`shiftbench run` names it {new!r})",
            )
        return new != name

    def engine_names(self) -> bool:
        """The manifest's shifts and predictions use the engine's setting names (checked before
        anything else, so an old name is one clear reason, not a list of missing shifts)."""
        m = self.v.manifest
        bad = [self.old_name(name, (entry or {}).get("protocol") or {}, f"{MANIFEST} shifts")
               for name, entry in sorted(m["shifts"].items())]
        protocols = {name: (entry or {}).get("protocol") or {} for name, entry in m["shifts"].items()}
        bad += [self.old_name(name, protocols.get(name, {}), f"{MANIFEST} predictions")
                for name in sorted(m["predictions"]) if name not in m["shifts"]]
        return not any(bad)

    def files(self, members: dict[str, bytes]) -> None:
        listed = self.v.manifest["files"]
        for name in sorted(set(members) - set(listed) - {MANIFEST}):
            self.v.fail("unlisted-member", f"member {name!r} is not listed in {MANIFEST}; refused")
        for name, entry in sorted(listed.items()):
            if name not in members:
                self.v.fail("missing-member", f"{name}: listed in {MANIFEST} but not in the bundle")
            elif (
                sha256_bytes(members[name]) != entry["sha256"]
                or len(members[name]) != entry["size"]
            ):
                self.v.fail(
                    "hash-mismatch",
                    f"{name}: sha256 differs from {MANIFEST} (file edited or swapped)",
                )

    def load_specs(self) -> None:
        """Versions must match this harness (sizes and class maps depend on them); protocol tags
        may differ (e.g. ObjectNet's 113-way head), which puts the entry in its own table."""
        for name in sorted(set(self.v.manifest["shifts"]) | set(self.required)):
            try:
                self.shifts[name] = self.get_shift(name)
                self.specs[name] = self.shifts[name].spec
            except ValueError as exc:
                self.v.fail("unknown-shift", str(exc))
        for name, entry in sorted(self.v.manifest["shifts"].items()):
            spec = self.specs.get(name)
            if spec is None:
                continue
            if entry["version"] != spec.version:
                self.v.fail(
                    "protocol-mismatch",
                    f"{name}: evaluated as version {entry['version']} but the benchmark uses {spec.version}; rerun with this harness",
                )
            if entry["expected_size"] != spec.expected_size:
                self.v.fail(
                    "count-mismatch",
                    f"{name}: manifest expects {_fmt_n(entry['expected_size'])} examples but the shift has {_fmt_n(spec.expected_size)}",
                )

    def load_predictions(self, members: dict[str, bytes]) -> None:
        m = self.v.manifest
        for shift, entry in sorted(m["predictions"].items()):
            path = entry["path"]
            if shift not in m["shifts"]:
                self.v.fail(
                    "schema",
                    f"{path}: predictions for {shift}, which the manifest's shifts do not list",
                )
                continue
            if path not in members or path not in m["files"]:
                self.v.fail(
                    "missing-member",
                    f"{path}: predictions for {shift} listed but not in the bundle",
                )
                continue
            try:
                arrays = read_npz(members[path], path, self.limits.max_member)
                header = json.loads(str(arrays.pop("header")))
                meta = {k[5:]: arrays.pop(k) for k in list(arrays) if k.startswith("meta.")}
                preds = Predictions(
                    header["model"],
                    header["shift"],
                    arrays["keys"],
                    arrays["labels"],
                    arrays["logits"],
                    meta,
                )
            except BundleError as exc:
                self.v.fail(exc.code, str(exc))
                continue
            except (KeyError, ValueError, TypeError) as exc:
                self.v.fail("corrupt", f"{path}: not a predictions file ({exc})")
                continue
            if preds.model != m["model"] or preds.shift != shift:
                self.v.fail(
                    "hash-mismatch",
                    f"{path}: holds {preds.model!r} on {preds.shift!r}, not {m['model']!r} on {shift!r} (file swapped)",
                )
            if preds.sha256() != entry["sha256"]:
                self.v.fail(
                    "hash-mismatch",
                    f"{path}: content sha256 differs from {MANIFEST} (predictions edited or swapped)",
                )
            if preds.logits.ndim != 2 or preds.labels.ndim != 1:
                self.v.fail("corrupt", f"{path}: logits must be [N, C] and labels [N]")
                continue
            n, expected = len(preds), m["shifts"][shift]["expected_size"]
            if n != entry["n"]:
                self.v.fail(
                    "count-mismatch",
                    f"{path}: holds {_fmt_n(n)} predictions but {MANIFEST} says {_fmt_n(entry['n'])}",
                )
            if n != expected and not m.get("incomplete"):
                self.v.fail(
                    "count-mismatch",
                    f"{shift}: {_fmt_n(n)} predictions but the shift has {_fmt_n(expected)} examples (keys dropped or added)",
                )
            keys = np.asarray(preds.keys).astype(str)
            uniq, counts = np.unique(keys, return_counts=True)
            if len(uniq) != n:
                dup = uniq[counts > 1]
                self.v.fail(
                    "duplicate-key",
                    f"{shift}: {len(dup)} keys appear more than once (e.g. {str(dup[0])!r})",
                )
            spec = self.specs.get(shift)
            if (
                spec is not None
                and len(preds.labels)
                and (preds.labels.min() < 0 or preds.labels.max() >= spec.num_classes)
            ):
                self.v.fail("label-range", f"{shift}: labels outside 0..{spec.num_classes - 1}")
                continue
            self.preds[shift] = preds

    def load_rows(self, members: dict[str, bytes]) -> None:
        if RESULTS not in members:
            return
        try:
            raw = loads_jsonl(members[RESULTS], RESULTS)
        except ValueError as exc:
            return self.v.fail("malformed", str(exc))
        seen = set()
        for i, row in enumerate(raw, 1):
            try:
                r = Result.from_dict(row) if isinstance(row, dict) else None
            except (TypeError, ValueError) as exc:
                self.v.fail("schema", f"{RESULTS} line {i}: not a result row ({exc})")
                continue
            if r is None:
                self.v.fail("schema", f"{RESULTS} line {i}: not a JSON object")
                continue
            if self.old_name(r.setting, r.protocol, f"{RESULTS} line {i}"):
                continue
            if r.model != self.v.manifest["model"]:
                self.v.fail(
                    "schema",
                    f"{RESULTS} line {i}: model {r.model!r} is not the submitted {self.v.manifest['model']!r}",
                )
                continue
            if r.setting in seen:
                self.v.fail(
                    "duplicate-row", f"{RESULTS} line {i}: setting {r.setting!r} appears twice"
                )
                continue
            seen.add(r.setting)
            self.rows.append(r)

    def required_shifts(self) -> None:
        settings = {r.setting for r in self.rows}
        for shift in self.required:
            spec = self.specs.get(shift)
            if shift not in self.v.manifest["predictions"] or shift not in settings:
                self.v.fail(
                    "missing-shift",
                    f"{shift}: required by the leaderboard but has no {'predictions' if shift in settings else 'result row'} in the bundle",
                )
            if spec is not None and spec.id_reference:
                ref = (
                    id_view_setting(spec.id_reference, shift)
                    if spec.class_map is not None
                    else spec.id_reference
                )
                if ref not in settings:
                    self.v.fail(
                        "missing-shift",
                        f"{shift}: its ID reference {ref!r} has no result row in the bundle",
                    )

    def rows_consistent(self) -> None:
        m = self.v.manifest
        for r in self.rows:
            id_shift, _, view_of = r.setting.partition("@")
            if id_shift != r.shift:
                self.v.fail(
                    "schema", f"{RESULTS}: setting {r.setting!r} does not score shift {r.shift!r}"
                )
                continue
            entry = m["shifts"].get(r.shift)
            protocol_of = m["shifts"].get(view_of or r.shift)
            if entry is None or protocol_of is None:
                self.v.fail(
                    "schema",
                    f"{RESULTS}: {r.setting} needs shift {view_of or r.shift!r}, which the manifest does not list",
                )
                continue
            # an ID view is scored under the OOD shift's classes and protocol, as the engine does
            if r.shift_version != entry["version"] or dict(r.protocol) != dict(
                protocol_of["protocol"]
            ):
                self.v.fail(
                    "protocol-mismatch",
                    f"{r.setting}: result row's version/protocol differ from the manifest's for {view_of or r.shift}",
                )
            if r.predictions_sha256 != m["predictions"].get(r.shift, {}).get("sha256"):
                self.v.fail(
                    "hash-mismatch",
                    f"{r.setting}: result row's predictions_sha256 is not the bundled {r.shift} predictions' hash",
                )
            self.recompute(r, view_of or None)

    def recompute(self, r: Result, view_of: str | None) -> None:
        """Score the row's predictions through the engine's own scoring path and compare."""
        from harness import metrics
        from harness.scoring import ScoreTask, score_task

        if (
            r.shift not in self.preds
            or r.shift not in self.specs
            or (view_of and view_of not in self.specs)
        ):
            return  # the missing pieces already failed
        mapped = self.specs[view_of or r.shift]
        if r.class_map is not None and mapped.class_map is None:
            return self.v.fail(
                "needs-data",
                f"{r.setting}: scored through a class map that ships with the {mapped.name} dataset, not with "
                "the harness; validate with --data-root DIR to recompute it",
            )
        if view_of and mapped.class_map is None:
            return self.v.fail(
                "protocol-mismatch",
                f"{r.setting}: {view_of} has no class map, so it has no ID view",
            )
        task = ScoreTask(r.setting, r.shift, view_of)
        try:
            scored, spec, got, groups = score_task(
                task,
                self.preds[r.shift],
                self.specs.__getitem__,
                metrics,
            )
        except ValueError as exc:
            return self.v.fail("unscorable", f"{r.setting}: {exc}")
        digest = spec.class_map.digest() if spec.class_map is not None else None
        if r.class_map != digest:
            self.v.fail(
                "protocol-mismatch",
                f"{r.setting}: scored with class map {r.class_map} but {spec.name}'s is {digest}",
            )
        n = len(scored)
        if r.n != n:
            return self.v.fail(
                "count-mismatch",
                f"{r.setting}: row claims n={_fmt_n(r.n)} but the predictions give {_fmt_n(n)} examples",
            )
        expected = spec.expected_size
        if view_of and spec.class_map is not None:  # the view's size on the complete ID shift
            from harness.scoring import view_expected_size

            expected = view_expected_size(n, len(self.preds[r.shift]), self.specs[r.shift].expected_size,
                                          getattr(self.shifts.get(r.shift), "per_class", None), spec.class_map)
        if r.n_expected != expected:
            self.v.fail(
                "count-mismatch",
                f"{r.setting}: row expects {_fmt_n(r.n_expected)} examples but the shift has {_fmt_n(expected)}",
            )
        if "top1" not in r.metrics:
            self.v.fail(
                "metric-mismatch", f"{r.setting}: no top1 claimed; the leaderboard ranks on it"
            )
        for name, claimed in sorted(r.metrics.items()):
            if name not in got:
                self.v.fail(
                    "metric-mismatch",
                    f"{r.setting}: claims metric {name!r}, which {spec.name} does not define",
                )
            elif (
                not isinstance(claimed, (int, float))
                or isinstance(claimed, bool)
                or abs(float(claimed) - got[name]) > TOLERANCE
            ):
                self.v.fail(
                    "metric-mismatch",
                    f"{r.setting}: claimed {name} {claimed!r} but the predictions give {got[name]:.6f}{_hits(name, got[name], n)}",
                )
        if dict(r.group_counts) != {str(k): v for k, v in groups.items()}:
            self.v.fail(
                "metric-mismatch",
                f"{r.setting}: claimed group counts differ from the predictions' metadata",
            )
        if "top1" in got:
            self.v.scores[r.setting] = Score(got["top1"], n)

    def against_data(self, root: Path) -> None:
        """Keys and labels against the dataset; a shift whose spec is completed by locating its
        data (ObjectNet's class map from the dataset's mapping files) is re-read afterwards."""
        for shift, preds in sorted(self.preds.items()):
            if shift not in self.shifts:
                continue
            truth = {ex.key: int(ex.label) for ex in self.shifts[shift].examples(root)}
            self.specs[shift] = self.shifts[shift].spec
            keys = [str(k) for k in preds.keys]
            missing = sorted(set(truth) - set(keys))
            extra = sorted(set(keys) - set(truth))
            if missing or extra:
                sample = ", ".join(repr(k) for k in (missing + extra)[:3])
                self.v.fail(
                    "key-mismatch",
                    f"{shift}: keys differ from the dataset under {root}: {len(missing)} dataset keys not in the bundle, "
                    f"{len(extra)} bundle keys not in the dataset (e.g. {sample})",
                )
            wrong = sum(
                1
                for k, y in zip(keys, preds.labels.tolist(), strict=True)
                if k in truth and truth[k] != y
            )
            if wrong:
                self.v.fail(
                    "label-mismatch",
                    f"{shift}: {wrong} bundled labels disagree with the dataset's ground truth",
                )


def validate_bundle(
    path: Path,
    required: Sequence[str] = DEFAULT_REQUIRED_SHIFTS,
    data_root: Path | None = None,
    get_shift: Callable[[str], Shift] = registered_shift,
    limits: Limits = DEFAULT_LIMITS,
    allow_incomplete: bool = False,
) -> Validation:
    """Every check on one bundle; ``Validation.ok`` is true only when nothing failed.
    ``get_shift`` resolves shift names (specs, and examples with ``data_root``). A bundle marked
    incomplete (``submit --allow-incomplete``) fails unless ``allow_incomplete``; then its
    prediction counts may differ from the published sizes, and every other check still holds."""
    v = Validation(Path(path))
    _Check(v, required, get_shift, limits, allow_incomplete).run(data_root)
    return v
