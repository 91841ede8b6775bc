"""The run directory's layout (``docs/run-directory.md``) and file hashing: what readers of a run
(the report, the submission builder) need without the engine that writes it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.api import Result
from harness.config import RunConfig, from_dict

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_parsed: dict[str, tuple[bytes, list[Result]]] = {}  # results.jsonl -> (sha256 of its bytes, rows)


def safe_name(name: str) -> str:
    """Filesystem-safe form of a model or shift name (the file header keeps the real one)."""
    return _UNSAFE.sub("_", name)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunLayout:
    """Where a run directory keeps its config, results and predictions, and how to read them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.jsonl"

    def predictions_path(self, model: str, shift: str) -> Path:
        return self.path / "predictions" / safe_name(model) / f"{safe_name(shift)}.npz"

    def sidecar_path(self, model: str, shift: str) -> Path:
        return self.predictions_path(model, shift).with_suffix(".json")

    def read_config(self) -> RunConfig | None:
        if not self.config_path.exists():
            return None
        try:
            raw = json.loads(self.config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path}: not valid JSON ({exc}); restore it or use another --run-dir") from None
        return from_dict(raw.get("config", {}), str(self.config_path))

    def sidecar(self, model: str, shift: str) -> dict[str, Any]:
        path = self.sidecar_path(model, shift)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def stored_predictions(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every predictions file with its sidecar, in path order."""
        for sidecar in sorted((self.path / "predictions").glob("*/*.json")):
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{sidecar}: not valid JSON ({exc}); delete it and rerun the cell") from None
            yield sidecar.with_suffix(".npz"), meta

    def read_results(self) -> list[Result]:
        """The rows; a file whose bytes are unchanged since it was last parsed is not parsed
        again (a run checks its cells against results.jsonl many times)."""
        try:
            data = self.results_path.read_bytes()
        except FileNotFoundError:
            return []
        key = os.path.realpath(self.results_path)
        digest = hashlib.sha256(data).digest()
        cached = _parsed.get(key)
        if cached is None or cached[0] != digest:
            cached = (digest, self._parse_results(data.decode()))
            _parsed[key] = cached
        return list(cached[1])

    def _parse_results(self, text: str) -> list[Result]:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(Result.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise ValueError(f"{self.results_path}:{i}: not a result row ({exc})") from None
        return rows
