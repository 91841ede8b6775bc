"""The testbed's row format: one accuracy per (source, model, evaluation setting).

Settings use the canonical names shared with the engine's ``results.jsonl`` (see
``docs/run-directory.md``); ID views on a shift's classes are named with
``harness.api.id_view_setting`` (``imagenet@imagenet-r``). Accuracies are fractions.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.api import id_view_setting
from harness.files import atomic_file

ID_SETTING = "imagenet"

#: The published tables' OOD settings, in page order, with the ID view on the same classes (if
#: any). Page order only: rows of any other setting are placed by the ID setting they name.
SHIFTS: dict[str, str | None] = {
    "imagenetv2-matched-frequency": None,
    "imagenet-sketch": None,
    "imagenet-r": id_view_setting(ID_SETTING, "imagenet-r"),
    "imagenet-a": id_view_setting(ID_SETTING, "imagenet-a"),
    "objectnet": id_view_setting(ID_SETTING, "objectnet"),
}

#: The ID setting each published OOD setting pairs with (foreign tables carry no such field).
PUBLISHED_ID_SETTINGS: dict[str, str] = {s: v or ID_SETTING for s, v in SHIFTS.items()}

SETTINGS: tuple[str, ...] = (ID_SETTING, *SHIFTS, *(v for v in SHIFTS.values() if v))

#: Test-set sizes (examples scored) used for Clopper-Pearson intervals when a source gives none.
#: ID views: 50 val images per ImageNet class in the subset (200 for R/A, 125 ids for ObjectNet).
DEFAULT_SIZES: dict[str, int] = {
    "imagenet": 50_000,
    "imagenetv2-matched-frequency": 10_000,
    "imagenet-sketch": 50_889,
    "imagenet-r": 30_000,
    "imagenet-a": 7_500,
    "objectnet": 18_574,
    "imagenet@imagenet-r": 10_000,
    "imagenet@imagenet-a": 10_000,
    "imagenet@objectnet": 6_250,
}

#: Protocol tags that make two evaluations of one setting incomparable; rows whose values for
#: these keys differ are never put in one fit or table. Missing keys read as the default here.
#: Vocabulary shared with the engine's ``Result.protocol``: ``head`` (``imagenet-1k``: the
#: 1000-way ImageNet head; ``objectnet-113-names``: a 113-way zero-shot head from ObjectNet's
#: class names), ``projection`` (``max`` over each ObjectNet class's ImageNet ids), ``crop``
#: (``border-2px`` as imagenet-testbed does; WiSE-FT, model soups and CLIP_benchmark crop nothing),
#: ``version`` (ObjectNet ``1.0`` or ``1.0-beta``), ``format`` (ImageNetV2 ``format-val`` re-encoding).
PROTOCOL_KEYS: dict[str, dict[str, str]] = {
    "imagenetv2-matched-frequency": {"format": "original"},
    "objectnet": {"version": "1.0", "head": "imagenet-1k", "projection": "max", "crop": "none"},
    "imagenet@objectnet": {"head": "imagenet-1k", "projection": "max"},
}

#: Protocol entries that separate rows of any setting wherever a row has them: which split was
#: scored and how, and a decoder other than PIL's (the engine adds ``decoder`` to such rows).
SPLIT_KEYS = ("split", "split_scheme", "decoder")

COLUMNS = ("source", "model", "setting", "accuracy", "n", "protocol", "tags")
#: Written only when some row pairs otherwise than its setting's published pairing, or holds
#: another metric than top-1 (the bundled testbed has neither).
EXTRA_COLUMNS = ("id_setting", "metric")


@dataclass(frozen=True)
class Row:
    """One published or measured accuracy. ``protocol`` and ``tags`` are sorted tuples."""

    source: str
    model: str
    setting: str
    accuracy: float
    n: int | None
    protocol: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    #: The setting this accuracy is plotted against (None: an ID accuracy, or unknown).
    id_setting: str | None = None
    #: Which metric ``accuracy`` holds (``top1``, ``macro_f1``, ``worst_acc:region!Other``).
    metric: str = "top1"

    def protocol_key(self) -> tuple[tuple[str, str], ...]:
        """The comparability key: the values of this setting's protocol keys (defaults filled in),
        and the split, split scheme and decoder wherever a row names them (a ``--split train`` row
        is never fitted with the official test's, nor an nvjpeg-decoded row with PIL's)."""
        defaults = {**{k: "" for k in SPLIT_KEYS}, **PROTOCOL_KEYS.get(self.setting, {})}
        proto = dict(self.protocol)
        return tuple((k, proto.get(k, v)) for k, v in sorted(defaults.items()) if proto.get(k, v))


def make_row(
    source: str,
    model: str,
    setting: str,
    accuracy: float,
    n: int | None = None,
    protocol: Mapping[str, str] | None = None,
    tags: Iterable[str] = (),
    where: str = "",
    id_setting: str | None = None,
    metric: str = "top1",
) -> Row:
    """Build a row, refusing accuracies outside [0, 1] (percent must be converted first).

    ``id_setting`` None takes the published pairing of the setting, if it has one."""
    acc = float(accuracy)
    if not 0.0 <= acc <= 1.0:
        raise ValueError(
            f"{where or source}: accuracy {accuracy!r} for {model!r} on {setting!r} is not a fraction in [0, 1]; "
            "if the file holds percent, pass the matching --format so it is converted"
        )
    return Row(
        source=source,
        model=model,
        setting=setting,
        accuracy=acc,
        n=int(n) if n else (DEFAULT_SIZES.get(setting) if metric == "top1" else None),
        protocol=tuple(sorted((str(k), str(v)) for k, v in (protocol or {}).items())),
        tags=tuple(sorted(set(tags))),
        id_setting=id_setting or PUBLISHED_ID_SETTINGS.get(setting),
        metric=metric,
    )


def _plain(row: Row) -> bool:
    return row.metric == "top1" and row.id_setting == PUBLISHED_ID_SETTINGS.get(row.setting)


def _encode(row: Row, extra: bool = False) -> list[str]:
    return [
        row.source,
        row.model,
        row.setting,
        repr(row.accuracy),
        "" if row.n is None else str(row.n),
        ";".join(f"{k}={v}" for k, v in row.protocol),
        ";".join(row.tags),
        *((row.id_setting or "", row.metric) if extra else ()),
    ]


def dumps(rows: Iterable[Row]) -> str:
    """CSV text of ``rows`` in a stable order (source, model, setting, metric)."""
    rows = list(rows)
    extra = not all(_plain(r) for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((*COLUMNS, *EXTRA_COLUMNS) if extra else COLUMNS)
    for row in sorted(rows, key=lambda r: (r.source, r.model, r.setting, r.metric)):
        w.writerow(_encode(row, extra))
    return buf.getvalue()


def write_table(rows: Iterable[Row], path: Path) -> None:
    """Write a ``.csv`` or ``.csv.gz`` table atomically; gzip output is byte-reproducible."""
    path = Path(path)
    data = dumps(rows).encode()
    with atomic_file(path, "wb") as fh:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(data)
        else:
            fh.write(data)


def read_table(path: Path) -> list[Row]:
    """Read a table written by :func:`write_table`."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, None) or ())
        if header not in (COLUMNS, (*COLUMNS, *EXTRA_COLUMNS)):
            raise ValueError(f"{path}: not a shiftbench testbed table (expected columns {', '.join(COLUMNS)}"
                             f"[, {', '.join(EXTRA_COLUMNS)}])")
        rows = []
        for line, rec in enumerate(reader, start=2):
            if len(rec) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} columns, found {len(rec)}")
            source, model, setting, acc, n, proto, tags = rec[:7]
            id_setting, metric = rec[7:] if len(rec) > 7 else ("", "top1")
            rows.append(
                make_row(
                    source,
                    model,
                    setting,
                    float(acc),
                    int(n) if n else None,
                    dict(p.split("=", 1) for p in proto.split(";") if p),
                    [t for t in tags.split(";") if t],
                    where=f"{path}:{line}",
                    id_setting=id_setting or None,
                    metric=metric or "top1",
                )
            )
    return rows
