"""The run directory's layout (``docs/run-directory.md``) and file hashing: what readers of a run
(the report, the submission builder) need without the engine that writes it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


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
    """Where a run directory keeps its config, results and predictions."""

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
