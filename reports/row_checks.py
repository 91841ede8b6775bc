"""Checks on ``results.jsonl`` rows before a report uses them: one line naming the file, the
line and the field, instead of a traceback or a silently wrong number.

A row is refused if a field has the wrong type, a metric is not a finite number, or counts
are negative; two rows for one (model, setting) are an error unless they are identical
(then one is kept), because which one wins would otherwise depend on the order of the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

_TEXT = ("model", "setting", "shift", "shift_version")
_COUNTS = ("n", "n_expected")
_MAPPINGS = ("metrics", "protocol", "group_counts", "provenance")
_OPTIONAL_TEXT = ("class_map", "predictions_sha256")


def check_result_row(obj: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming ``where`` (``file:line``) and the first bad field."""

    def bad(field: str, what: str) -> ValueError:
        return ValueError(f"{where}: field {field!r} {what}, got {obj.get(field)!r}")

    for field in _TEXT:
        if field in obj and not isinstance(obj[field], str):
            raise bad(field, "must be text")
        if field in ("model", "setting") and not (isinstance(obj.get(field), str) and obj[field].strip()):
            raise bad(field, "must be non-empty text")
    for field in _COUNTS:
        value = obj.get(field)
        if field in obj and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(field, "must be a whole number >= 0")
    for field in _MAPPINGS:
        if field in obj and obj[field] is not None and not isinstance(obj[field], Mapping):
            raise bad(field, "must be an object")
    for field in _OPTIONAL_TEXT:
        if obj.get(field) is not None and not isinstance(obj[field], str):
            raise bad(field, "must be text or null")
    for name, value in (obj.get("metrics") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: field 'metrics.{name}' must be a finite number, got {value!r}")


def unique_results(results: Iterable[tuple[int, Any]], path: Any) -> list[tuple[int, Any]]:
    """``(line, Result)`` pairs with one per (model, setting); differing duplicates are an error."""
    first: dict[tuple[str, str], tuple[int, Any]] = {}
    out = []
    for line, res in results:
        key = (res.model, res.setting)
        if key in first:
            if first[key][1] != res:
                raise ValueError(
                    f"{path}:{line}: a second, different row for model {res.model!r} on {res.setting!r} "
                    f"(first at line {first[key][0]}); keep one: rerun that cell with `shiftbench run ... --redo` "
                    "(a run directory holds one row per model and setting), or delete the stale line"
                )
            continue
        first[key] = (line, res)
        out.append((line, res))
    return out


def one_row_per_setting(rows: Iterable[Any], path: Any) -> list[Any]:
    """The ``Result`` rows of one input with one per (source, model, setting): identical copies
    count once; two that differ are an error naming both figures, since which one the report
    used would depend on the order of the file (a results table concatenated from two runs, a
    model listed twice)."""
    from reports.rows import source_of

    first: dict[tuple[str, str, str], Any] = {}
    out = []
    for res in rows:
        key = (source_of(res), res.model, res.setting)
        if key not in first:
            first[key] = res
            out.append(res)
        elif first[key] != res:
            a, b = dict(first[key].metrics), dict(res.metrics)
            what = f"{a} and {b}" if a != b else "the same figures under different protocols or tags"
            raise ValueError(
                f"{path}: two different rows for model {res.model!r} on {res.setting!r} ({what}); "
                "keep one, or give the two models different names"
            )
    return out
