"""Validation results kept under ``SITE_DIR/.validation/``, so rebuilding the board after one
new submission does not re-read every bundle.

An entry is keyed by the bundle's sha256, the harness version, the required shifts, the data
root and what the data there holds (each required shift's keys and labels, as a digest), and
written atomically; a changed bundle, harness or dataset simply misses. The cache lives in the
maintainer's own output folder and is trusted; bundles never are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.files import atomic_write_text
from reports.submission_validate import Failure, Score, Validation


class ValidationCache:
    def __init__(
        self,
        folder: Path,
        required: Sequence[str],
        data_root: Path | None,
        allow_incomplete: bool = False,
        data: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.key = {
            "harness_version": __version__,
            "required": list(required),
            "data_root": str(data_root) if data_root else None,
        }
        if data:
            self.key["data"] = dict(sorted(data.items()))
        if allow_incomplete:
            self.key["allow_incomplete"] = True

    def _path(self, sha: str) -> Path:
        return self.folder / f"{sha}.json"

    def get(self, path: Path, sha: str) -> Validation | None:
        cached = self._path(sha)
        try:
            obj: dict[str, Any] = json.loads(cached.read_text())
        except (OSError, ValueError):
            return None
        if obj.get("key") != self.key:
            return None
        v = Validation(Path(path), [Failure(c, m) for c, m in obj["failures"]], obj["manifest"])
        v.labels_checked = self.key["data_root"] is not None  # validated against that data
        v.scores = {s: Score(top1, n) for s, (top1, n) in obj["scores"].items()}
        return v

    def put(self, sha: str, v: Validation) -> None:
        obj = {
            "key": self.key,
            "failures": [[f.code, f.message] for f in v.failures],
            "manifest": v.manifest,
            "scores": {s: [sc.top1, sc.n] for s, sc in v.scores.items()},
            "labels_checked": v.labels_checked,
        }
        atomic_write_text(self._path(sha), json.dumps(obj))
