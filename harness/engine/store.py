"""The run directory (``docs/run-directory.md``): config, predictions, results.

Every write goes to a temporary file of its own that is renamed into place, so a crash, a
full disk or a second process leaves either the old file or the new one, never half of
either. Each predictions file has a small sidecar (``<shift>.json``: cell hash, identity and
sha256) written after it, which is how a rerun knows a cell finished predicting even if
scoring never ran. The reading methods are the core's (:class:`harness.layout.RunLayout`).

Processes sharing a run directory coordinate through two kinds of ``flock``: ``locked()``
(``.lock``) around every read-modify-write of ``config.json`` and ``results.jsonl`` (``run``
appending, ``score`` rescoring), and ``cell_lock`` (``.locks/<model>/<shift>.lock``) around
deciding, predicting, saving and scoring one cell, so two runs never predict one cell twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from harness.api import Predictions, Result
from harness.config import RunConfig
from harness.files import atomic_write_text, file_lock, storage_error
from harness.layout import RunLayout, safe_name

__all__ = ["RunDir", "atomic_write_text", "result_identity", "safe_name"]


class RunDir(RunLayout):
    """One run directory; every method is safe to call again after a crash. The reading
    methods are the core's (:class:`harness.layout.RunLayout`); this class writes."""

    # -- config -------------------------------------------------------------------------
    def adopt_config(self, config: RunConfig) -> RunConfig:
        """Record ``config``; a directory made with other identity settings is refused.

        The stored models and shifts become the union of old and new, so the directory
        describes everything it holds; its ``id_shift`` stays until a run names another.
        """
        with self.locked():
            return self._adopt_config(config)

    def check_config(self, config: RunConfig) -> None:
        """Refuse ``config`` if the directory was made with other identity settings (reads only:
        a run checks this before it writes anything; ``adopt_config`` checks again under the lock)."""
        self._refuse_other_identity(self.read_config(), config)

    def _refuse_other_identity(self, old: RunConfig | None, config: RunConfig) -> None:
        if old is not None and old.identity() != config.identity():
            diffs = [f"{k}: {old.identity()[k]!r} -> {config.identity()[k]!r}" for k in old.identity() if old.identity()[k] != config.identity()[k]]
            raise ValueError(
                f"run directory {self.path} was made with another configuration ({'; '.join(diffs)}); "
                "use a new --run-dir, or the original settings"
            )

    def _adopt_config(self, config: RunConfig) -> RunConfig:
        old = self.read_config()
        self._refuse_other_identity(old, config)
        merged = config
        if old is not None:
            merged = dataclasses.replace(
                config,
                models=_union(old.models, config.models),
                shifts=_union(old.shifts, config.shifts),
                id_shift=config.id_shift or old.id_shift,  # a run that names none keeps the directory's
            )
        payload = {"config_hash": merged.config_hash(), "config": merged.to_dict()}
        atomic_write_text(self.config_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return merged

    # -- predictions ---------------------------------------------------------------------
    def save_predictions(
        self, preds: Predictions, cell_hash: str, stats: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
    ) -> str:
        """Write the predictions, then the sidecar that marks the cell as predicted."""
        path = self.predictions_path(preds.model, preds.shift)
        try:
            sha = preds.save(path)
        except OSError as exc:
            raise storage_error(path, exc) from exc
        sidecar = {"model": preds.model, "shift": preds.shift, "cell_hash": cell_hash, "sha256": sha, "n": len(preds), "stats": stats or {}}
        if identity is not None:
            sidecar["identity"] = identity
        atomic_write_text(self.sidecar_path(preds.model, preds.shift), json.dumps(sidecar, sort_keys=True, default=str) + "\n")
        return sha

    def finished_predictions(self, model: str, shift: str, cell_hash: str) -> Predictions | None:
        """Predictions of a cell that finished predicting with ``cell_hash``, else None."""
        sidecar = self.sidecar_path(model, shift)
        path = self.predictions_path(model, shift)
        if not (sidecar.exists() and path.exists()):
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            return None
        if meta.get("cell_hash") != cell_hash:
            return None
        try:
            preds = Predictions.load(path)
        except ValueError:
            return None
        if preds.sha256() != meta.get("sha256"):
            return None
        return preds

    # -- results -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The run directory's lock: held around each read-modify-write of its shared files."""
        with file_lock(self.path / ".lock"):
            yield

    def cell_lock(self, model: str, shift: str, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """One cell's lock: a second process wanting the cell waits, then finds it done
        (``wait=False``: ``BlockingIOError`` at once if another holds it)."""
        return file_lock(self.path / ".locks" / safe_name(model) / f"{safe_name(shift)}.lock", wait=wait)

    def append_results(self, rows: list[Result]) -> None:
        """Add rows; a stored row for the same (model, setting) is superseded, never duplicated.
        Rewrites the file atomically under the lock, so concurrent runs, ``score`` and crashes
        never lose or tear a row."""
        with self.locked():
            new_ids = {result_identity(r) for r in rows}
            existing = [r for r in self.read_results() if result_identity(r) not in new_ids]
            text = "".join(r.to_json() + "\n" for r in [*existing, *rows])
            atomic_write_text(self.results_path, text)

    def write_results(self, rows: list[Result]) -> None:
        with self.locked():
            atomic_write_text(self.results_path, "".join(r.to_json() + "\n" for r in rows))


def result_identity(row: Result) -> tuple[str, str]:
    """A run directory holds one row per (model, setting): the latest one computed."""
    return row.model, row.setting


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))

