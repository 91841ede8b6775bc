"""``shiftbench leaderboard``: validate a folder of submission bundles, place the accepted ones
against the baseline trend, rank them per protocol, and write the site::

    SITE_DIR/index.html                         sortable tables, plots, rejected list
    SITE_DIR/entries/<entry>.html               one page per accepted submission
    SITE_DIR/plots/<protocol>/<shift>.png       per-shift scatter, entries labelled by rank
    SITE_DIR/leaderboard.md, leaderboard.pdf, site.js
    SITE_DIR/.validation/<sha256>.json            validation results of unchanged bundles

Only files inside SITE_DIR are written, under names built from hashes, registered shift names
and sanitised file names, never from submitted text.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.api import Shift, ShiftSpec
from harness.files import atomic_folder
from harness.layout import sha256_file
from reports.leaderboard.cache import ValidationCache
from reports.leaderboard.ranking import Entry, Table, build_tables
from reports.leaderboard.trend import read_baseline
from reports.submission import DEFAULT_REQUIRED_SHIFTS
from reports.submission_validate import registered_shift, validate_bundle

BUNDLE_SUFFIX = ".tar.gz"
SITE_NAMES = frozenset({"index.html", "entries", "plots", "leaderboard.md", "leaderboard.pdf", "site.js", ".validation"})
UNVERIFIED_REASON = (
    "[labels-unverified] keys and labels were not checked against the dataset (a forged bundle "
    "can claim any accuracy): pass --data-root, or --trust-labels to list it marked as unverified"
)


@dataclass
class Board:
    tables: list[Table]
    rejected: list[tuple[str, list[str]]]

    @property
    def accepted(self) -> list[Entry]:
        return [e for t in self.tables for e in t.entries]


def entry_id(path: Path, sha: str) -> str:
    """A unique, file-name-safe id: sanitised stem plus the bundle's hash prefix."""
    stem = path.name[: -len(BUNDLE_SUFFIX)] if path.name.endswith(BUNDLE_SUFFIX) else path.stem
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", stem)[:60] or "entry"
    return f"{safe}-{sha[:8]}"


def collect(
    submissions: Path,
    required: Sequence[str],
    data_root: Path | None,
    get_shift: Callable[[str], Shift],
    progress: bool = True,
    cache: ValidationCache | None = None,
    allow_incomplete: bool = False,
    trust_labels: bool = False,
):
    """(accepted [(entry id, Validation)], rejected [(file name, reasons)]); ``cache`` reuses
    earlier results for unchanged bundles. A bundle whose labels were not checked against the
    data (no ``data_root``) is rejected unless ``trust_labels``: its labels are its own word."""
    from tqdm import tqdm

    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(
            f"{submissions}: no such folder of submissions (*.tar.gz from `shiftbench submit`)"
        )
    files = sorted(p for p in submissions.iterdir() if p.is_file() and not p.name.startswith("."))
    accepted, rejected = [], []
    seen: dict[str, str] = {}  # bundle sha256 -> the file it was first read from
    for path in tqdm(files, desc="validating submissions", unit="bundle", disable=not progress):
        if not path.name.endswith(BUNDLE_SUFFIX):
            rejected.append(
                (path.name, [f"[not-a-bundle] not a {BUNDLE_SUFFIX} submission bundle"])
            )
            continue
        sha = sha256_file(path)
        if sha in seen:  # one submission uploaded twice would be ranked twice
            rejected.append((path.name, [f"[duplicate-bundle] the same bundle as {seen[sha]}, which is listed"]))
            continue
        seen[sha] = path.name
        v = cache.get(path, sha) if cache else None
        if v is None:
            try:
                v = validate_bundle(
                    path,
                    required=required,
                    data_root=data_root,
                    get_shift=get_shift,
                    allow_incomplete=allow_incomplete,
                )
            except (
                Exception
            ) as exc:  # one hostile bundle must not stop the board; it is listed instead
                reason = (
                    f"[internal] the validator failed on this bundle: {exc!r}; please report it"
                )
                rejected.append((path.name, [reason]))
                continue
            if cache:
                cache.put(sha, v)
        if v.ok and not v.labels_checked and not trust_labels:
            rejected.append((path.name, [UNVERIFIED_REASON]))
        elif v.ok:
            accepted.append((entry_id(path, sha), v))
        else:
            rejected.append((path.name, [str(f) for f in v.failures]))
    return accepted, rejected


def data_digests(required: Sequence[str], get_shift: Callable[[str], Shift], data_root: Path) -> dict[str, str]:
    """Each required shift's keys and labels under ``data_root``, as a digest (one pass over the
    files, no image decoded): the validation cache misses when the dataset there changed, since
    a bundle's keys and labels were checked against what it held."""
    import hashlib

    from harness.scoring import resolve_split

    out = {}
    for name in required:
        shift = get_shift(name)
        h = hashlib.sha256()
        for ex in shift.lazy_examples(Path(data_root), resolve_split(shift, None)):
            h.update(f"{ex.key}\t{int(ex.label)}\n".encode())
        out[name] = h.hexdigest()
    return out


def completed_specs(
    required: Sequence[str], get_shift: Callable[[str], Shift], data_root: Path | None
) -> dict[str, ShiftSpec]:
    """The required shifts' specs, completed from the data when there is a data root: ObjectNet's
    class map ships with the dataset, and without it ObjectNet would be paired with full ImageNet
    instead of its same-class view ``imagenet@objectnet``. (Without a data root, bundles that use
    such a map are rejected as ``needs-data`` anyway.)"""
    specs = {}
    for name in required:
        shift = get_shift(name)
        specs[name] = shift.spec_for(Path(data_root)) if data_root is not None else shift.spec
    return specs


def build_leaderboard(
    submissions: Path,
    out: Path,
    required: Sequence[str] = DEFAULT_REQUIRED_SHIFTS,
    baselines: Sequence[Path] = (),  # results.jsonl files; none: the bundled testbed
    data_root: Path | None = None,
    get_shift: Callable[[str], Shift] = registered_shift,
    progress: bool = True,
    fresh: bool = False,
    allow_incomplete: bool = False,
    trust_labels: bool = False,
) -> Board:
    """Validate, rank and write the whole site into ``out``: built in a temp folder beside it
    and swapped into place, so a failure leaves the old site (or none), never half of one."""
    from tqdm import tqdm

    from reports.leaderboard.html import SITE_JS, entry_html, index_html, plot_path, write_text
    from reports.leaderboard.markdown import leaderboard_md
    from reports.leaderboard.pdf import write_pdf
    from reports.leaderboard.plots import write_scatter

    specs = completed_specs(required, get_shift, data_root)
    if not any(spec.id_reference for spec in specs.values()):
        raise ValueError(
            f"--require {','.join(required)} names no distribution shift (every one is an ID set): a leaderboard "
            "ranks accuracy under shift; add a shift, e.g. --require imagenet,imagenet-r"
        )
    baseline = read_baseline(baselines) if baselines else None
    out = Path(out)
    with atomic_folder(out, lambda name: name in SITE_NAMES) as site:
        old_cache = out / ".validation"
        if old_cache.is_dir() and not fresh:
            shutil.copytree(old_cache, site / ".validation")
        data = data_digests(required, get_shift, data_root) if data_root is not None else None
        cache = ValidationCache(site / ".validation", required, data_root, allow_incomplete, data)
        accepted, rejected = collect(
            submissions, required, data_root, get_shift, progress, cache, allow_incomplete, trust_labels
        )
        tables = build_tables(accepted, required, specs, baseline)
        board = Board(tables, rejected)

        jobs = [(t, s) for t in tables for s in t.ood_shifts]
        for t, s in tqdm(jobs, desc="drawing plots", unit="plot", disable=not progress):
            write_scatter(t, s, site / plot_path(t, s))
        for t in tables:
            for e in t.entries:
                write_text(site / "entries" / f"{e.id}.html", entry_html(t, e))
        shutil.copyfile(SITE_JS, site / "site.js")
        write_text(site / "leaderboard.md", leaderboard_md(tables, rejected))
        write_pdf(site / "leaderboard.pdf", tables, rejected)
        write_text(site / "index.html", index_html(tables, rejected))
    return board
