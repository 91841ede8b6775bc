"""A cell's identity: everything that fixes its numbers, as content rather than names.

A cell (one model on one shift) is done only while its identity is unchanged. The identity
holds the run settings that change predictions, the model's spec and options, the sha256 of
every weights file those name, the data root and the digest of the manifest actually read
(every key, label and metadata value in order), the stat signature of every image file or shard read,
``--allow-incomplete`` and the JPEG decoder. Point a run directory at other data, rewrite an
image or a checkpoint in place, or complete a dataset scored with ``--allow-incomplete``, and
the cell is predicted again, with a line saying which of these changed.

This module is the one place a cell's identity is computed: add a field here and every
stored cell whose recorded identity lacks it reruns once, saying so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.files import file_sha256

# Suffixes of weights files looked for inside a folder named by a model option.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def weights_digests(model_identity: str) -> dict[str, str]:
    """sha256 of every file a model's identity names (its weights, a soup's ingredients, a
    head's templates), keyed by resolved path; a folder contributes its weights files, and a
    folder named after a set's prefix (``classnames=objectnet:DIR``) every file in it."""
    try:
        parsed = json.loads(model_identity)
    except (json.JSONDecodeError, TypeError):
        parsed = model_identity
    files: set[Path] = set()
    for text in _strings(parsed):
        if not text or len(text) > 4096 or "\n" in text:
            continue
        candidates = [(Path(text).expanduser(), False)]
        prefix, colon, rest = text.partition(":")
        if colon and prefix.isidentifier() and rest:  # ``objectnet:DIR``: class names read from DIR's files
            candidates.append((Path(rest).expanduser(), True))
        for path, every_file in candidates:
            try:
                if path.is_file():
                    files.add(path.resolve())
                elif path.is_dir() and every_file:
                    files.update(p.resolve() for p in path.iterdir() if p.is_file())
                elif path.is_dir():
                    files.update(p.resolve() for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHTS_SUFFIXES)
            except OSError:
                continue
    return {str(p): file_sha256(p) for p in sorted(files)}


def cell_identity(
    config: Any, model_identity: str, shift: str, manifest_digest: str, data_root: str, decoder: str = "pil",
    data_files: str = "",
) -> dict[str, Any]:
    """What a cell's predictions depend on (``config`` is the run's ``RunConfig``; ``decoder``
    the JPEG decoder's label, ``harness.engine.gpu_decode.planned_decoder``; ``data_files``
    the manifest's digest of the image files' stat signatures, ``Manifest.files``)."""
    return {
        "model": model_identity,
        "weights_sha256": weights_digests(model_identity),
        "shift": shift,
        **config.identity(),
        "skip_bad_images": config.skip_bad_images,
        "allow_incomplete": config.allow_incomplete,
        "data_root": str(Path(data_root).resolve()) if data_root else "",
        "manifest": manifest_digest,
        "data_files": data_files,
        "decoder": decoder,
    }


def cell_hash(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


_WHAT = {
    "model": "the model's spec or options",
    "shift": "the shift",
    "split": "the split",
    "precision": "the precision",
    "seed": "the seed",
    "skip_bad_images": "--skip-bad-images",
    "allow_incomplete": "--allow-incomplete",
    "data_root": "the data root",
    "manifest": "the data (keys, labels or metadata read)",
    "data_files": "the image files (rewritten, replaced or touched since: size or modification time)",
    "decoder": "the JPEG decoder",
}


def identity_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Why a stored cell no longer matches: a short phrase naming what changed."""
    if not old:
        return "its stored results do not record what they were computed from (made by an older shiftbench)"
    reasons = []
    extra = sorted(set(old) ^ set(new))
    for key, what in _WHAT.items():
        if old.get(key) != new.get(key) and key not in extra:  # a field one side lacks: said below
            if key == "data_root":
                reasons.append(f"the data root ({old.get(key) or '?'} -> {new.get(key)})")
            else:
                reasons.append(what)
    old_w, new_w = old.get("weights_sha256") or {}, new.get("weights_sha256") or {}
    changed = sorted(p for p in set(old_w) | set(new_w) if old_w.get(p) != new_w.get(p))
    if changed and old.get("model") == new.get("model"):
        reasons.append("the contents of " + ", ".join(changed))
    if extra:
        reasons.append("what a cell's identity records (" + ", ".join(extra) + ")")
    return "changed: " + "; ".join(reasons) if reasons else "its inputs changed"
