"""shiftbench's own table format: ``Result`` rows as CSV, one line per (row, metric).

Columns ``source, model, setting, accuracy, n, protocol, tags`` (figures as fractions; ``n`` on
the top-1 line), plus ``id_setting, metric`` where some line pairs otherwise than its setting's
known pairing or holds another metric than top-1. Settings are the engine's names
(:mod:`reports.vocabulary`); a table written by an older version under the published tables'
names (``imagenetv2-matched-frequency``, ``objectnet`` with a names head) is read as a legacy
table, its settings translated (:func:`reports.vocabulary.legacy_setting`).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path

from harness.api import Result
from harness.files import atomic_file
from reports.rows import model_tags, published_result, source_of
from reports.vocabulary import KNOWN_ID_SETTINGS, legacy_setting

COLUMNS = ("source", "model", "setting", "accuracy", "n", "protocol", "tags")
#: Written only when some row pairs otherwise than its setting's known pairing, or holds
#: another metric than top-1 (the bundled testbed has neither).
EXTRA_COLUMNS = ("id_setting", "metric")

#: Protocol entry of a row scored on fewer images than its setting publishes: "n of n_expected".
INCOMPLETE = "images"


def _lines(res: Result) -> list[tuple[str, float, int | None]]:
    """(metric, value, n) written for a row: top-1 and its main metric; only top-1 has an ``n``."""
    return [(m, float(res.metrics[m]), (res.n or None) if m == "top1" else None)
            for m in dict.fromkeys(("top1", res.main_metric)) if m in res.metrics]


def _plain(res: Result, metric: str) -> bool:
    return metric == "top1" and res.id_setting == KNOWN_ID_SETTINGS.get(res.setting)


def _protocol(res: Result) -> dict[str, str]:
    proto = dict(res.protocol)
    if res.n_expected and res.n < res.n_expected:
        proto[INCOMPLETE] = f"{res.n} of {res.n_expected}"
    return proto


def _encode(res: Result, metric: str, value: float, n: int | None, extra: bool) -> list[str]:
    return [
        source_of(res),
        res.model,
        res.setting,
        repr(value),
        "" if n is None else str(n),
        ";".join(f"{k}={v}" for k, v in sorted(_protocol(res).items())),
        ";".join(sorted(set(model_tags(res)))),
        *((res.id_setting or "", metric) if extra else ()),
    ]


def dumps(rows: Iterable[Result]) -> str:
    """CSV text of ``rows`` in a stable order (source, model, setting, metric)."""
    lines = [(res, m, v, n) for res in rows for m, v, n in _lines(res)]
    extra = not all(_plain(res, m) for res, m, _, _ in lines)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((*COLUMNS, *EXTRA_COLUMNS) if extra else COLUMNS)
    for res, m, v, n in sorted(lines, key=lambda t: (source_of(t[0]), t[0].model, t[0].setting, t[1])):
        w.writerow(_encode(res, m, v, n, extra))
    return buf.getvalue()


def write_table(rows: Iterable[Result], path: Path) -> None:
    """Write a ``.csv`` or ``.csv.gz`` table atomically; gzip output is byte-reproducible."""
    path = Path(path)
    data = dumps(rows).encode()
    with atomic_file(path, "wb") as fh:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(data)
        else:
            fh.write(data)


def _incomplete(proto: dict[str, str], where: str) -> int | None:
    """The ``n_expected`` of an ``images=n of N`` entry (removed from ``proto``), else None."""
    text = proto.pop(INCOMPLETE, None)
    if text is None:
        return None
    got, _, expected = text.partition(" of ")
    if not (got.strip().isdigit() and expected.strip().isdigit()):
        raise ValueError(f"{where}: protocol entry {INCOMPLETE}={text!r} is not 'n of N'")
    return int(expected)


def read_table(path: Path) -> list[Result]:
    """Read a table written by :func:`write_table` (or by an older version, names translated):
    the lines of one (source, model, setting) become one row, its main metric the one line
    that is not top-1 (top-1 when there is none)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    groups: dict[tuple[str, str, str], list[dict]] = {}
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, None) or ())
        if header not in (COLUMNS, (*COLUMNS, *EXTRA_COLUMNS)):
            raise ValueError(f"{path}: not a shiftbench testbed table (expected columns {', '.join(COLUMNS)}"
                             f"[, {', '.join(EXTRA_COLUMNS)}])")
        for line, rec in enumerate(reader, start=2):
            if len(rec) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} columns, found {len(rec)}")
            source, model, setting, acc, n, proto_text, tags = rec[:7]
            id_setting, metric = rec[7:] if len(rec) > 7 else ("", "top1")
            where = f"{path}:{line}"
            entries = [p for p in proto_text.split(";") if p]
            if any("=" not in p for p in entries):
                raise ValueError(f"{where}: protocol {proto_text!r} is not key=value entries separated by ';'")
            proto = dict(p.split("=", 1) for p in entries)
            try:
                value = float(acc)
            except ValueError:
                raise ValueError(f"{where}: accuracy {acc!r} is not a number") from None
            if n and not n.strip().isdigit():
                raise ValueError(f"{where}: n {n!r} is not a whole number")
            setting = legacy_setting(setting, proto)
            entry = {"where": where, "metric": metric or "top1", "value": value, "n": int(n) if n else None,
                     "n_expected": _incomplete(proto, where), "protocol": proto,
                     "tags": tuple(t for t in tags.split(";") if t),
                     "id_setting": legacy_setting(id_setting, {}) if id_setting else None}
            runs = groups.setdefault((source, model, setting), [])
            if not runs or any(e["metric"] == entry["metric"] for e in runs[-1]):
                runs.append([])  # a repeated metric is a second row (refused by the report if it differs)
            runs[-1].append(entry)
    return [_result(key, entries) for key, runs in groups.items() for entries in runs]


def _result(key: tuple[str, str, str], entries: list[dict]) -> Result:
    source, model, setting = key
    first = entries[0]
    for e in entries[1:]:
        for field in ("protocol", "tags", "id_setting"):
            if e[field] != first[field]:
                raise ValueError(f"{e['where']}: {model!r} on {setting!r} has a different {field} than at "
                                 f"{first['where']}; the lines of one row must agree")
    others = [e["metric"] for e in entries if e["metric"] != "top1"]
    if len(others) > 1:
        raise ValueError(f"{entries[-1]['where']}: {model!r} on {setting!r} has {len(others)} metrics besides top-1 "
                         f"({', '.join(others)}); a row has one main metric: give the others their own source")
    top1 = next((e for e in entries if e["metric"] == "top1"), None)
    n = top1["n"] if top1 else None
    n_expected = next((e["n_expected"] for e in entries if e["n_expected"] is not None), None)
    return published_result(source, model, setting, {e["metric"]: e["value"] for e in entries}, n, first["protocol"],
                            first["tags"], first["where"], first["id_setting"], others[0] if others else "top1",
                            n_expected)
