"""Strict parsers for untrusted JSON and TOML: duplicated keys, NaN/Infinity and bad syntax are
errors that name the source, never silently resolved (``json`` keeps the last duplicate)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def no_duplicates(source: str, problem: str = "duplicate key {key!r}; each key may appear once"):
    """A JSON object hook refusing a key given twice, naming ``source`` and the key."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"{source}: {problem.format(key=key)}")
            out[key] = value
        return out

    return hook


def _no_constant(source: str):
    def hook(name: str) -> Any:
        raise ValueError(f"{source}: {name} is not valid JSON; write numbers as finite values")

    return hook


def _finite_float(source: str):
    """A float hook refusing numbers that overflow to infinity (``1e999`` is valid JSON syntax)."""

    def hook(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise ValueError(f"{source}: {text} is not a finite number; write numbers as finite values")
        return value

    return hook


def _text(data: str | bytes, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text ({exc})") from None


def loads_json(text: str | bytes, source: str) -> Any:
    """Parse one JSON document; errors are ValueError naming ``source`` and the position."""
    text = _text(text, source)
    try:
        return json.loads(
            text, object_pairs_hook=no_duplicates(source), parse_constant=_no_constant(source),
            parse_float=_finite_float(source),
        )
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def loads_jsonl(text: str | bytes, source: str) -> list[Any]:
    """Parse JSON Lines (blank lines skipped); errors name the line."""
    text = _text(text, source)
    return [
        loads_json(line, f"{source} line {i}")
        for i, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


def loads_toml(text: str | bytes, source: str) -> dict[str, Any]:
    """Parse TOML (duplicated keys and tables are errors in TOML itself)."""
    text = _text(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: malformed TOML: {exc}") from None
