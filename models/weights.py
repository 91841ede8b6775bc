"""Pretrained weights, fetched once and verified before use.

Two routes, both named by open_clip's and timm's own pretrained tables (never by a list of ours):

- OpenAI's CLIP archives (open_clip ``pretrained.py``: ``openai`` tags) are direct URLs of the form
  ``https://openaipublic.azureedge.net/clip/models/<sha256>/<file>.pt``: the sha256 is part of the
  URL, and the file is kept under ``$SHIFTBENCH_WEIGHTS`` (default ``~/.cache/shiftbench/weights``)
  as ``openai/<sha256>/<file>`` only after it matched.
- open_clip and timm weights on the Hugging Face Hub go through ``huggingface_hub``'s own download
  and cache (``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` honoured); a Git LFS file's ETag is its sha256,
  which the downloaded file is checked against.

``--model clip:ARCH --model-arg pretrained=TAG`` then finds the weights in either place offline.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.releases import openai_archive
from shifts.download import DownloadError, fetch, sha256_file

SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Fetched:
    path: Path
    how: str  # what verified it
    usage: str  # the command-line options that use it


def weights_dir() -> Path:
    return Path(os.environ.get("SHIFTBENCH_WEIGHTS") or Path.home() / ".cache" / "shiftbench" / "weights")


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``clip:ViT-B-32@openai`` -> ("clip", "ViT-B-32", "openai"); ``timm:resnet50.a1_in1k`` ->
    ("timm", "resnet50.a1_in1k", None)."""
    family, sep, rest = spec.partition(":")
    if not sep or family not in ("clip", "timm") or not rest:
        raise ValueError(f"{spec!r}: name weights as clip:ARCH@TAG (e.g. clip:ViT-B-32@openai) or timm:NAME.TAG")
    if family == "clip":
        arch, at, tag = rest.partition("@")
        if not at or not arch or not tag:
            raise ValueError(f"{spec!r}: a CLIP model needs its pretrained tag, e.g. clip:{arch or 'ViT-B-32'}@openai")
        return family, arch, tag
    return family, rest, None


def open_clip_cfg(arch: str, tag: str) -> dict:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch}; known: {', '.join(tags) or 'none'}")
    return cfg


def openai_url(cfg: dict) -> tuple[str, str] | None:
    """(sha256, file name) when open_clip's pretrained entry is an OpenAI archive."""
    return openai_archive(cfg.get("url") or "")


def open_clip_hub_files(hub: str) -> tuple[str, list[str]]:
    """open_clip's ``hf_hub`` entry -> (repo, file names to try in order): 'org/name/file.bin'
    names one file (its safetensors twin first), 'org/name/' open_clip's default names."""
    repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


def hf_cached(repo: str, names: list[str]) -> Path | None:
    """The first of ``names`` already in the Hugging Face cache (``HF_HUB_CACHE``), no network."""
    from huggingface_hub import try_to_load_from_cache

    cache = os.environ.get("HF_HUB_CACHE") or None
    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(hit, str):
            return Path(hit)
    return None


def cached_url_weights(arch: str, tag: str) -> Path | None:
    """An OpenAI archive for ``arch``/``tag`` fetched earlier (verified when it was stored)."""
    m = openai_url(open_clip_cfg(arch, tag))
    if m is None:
        return None
    path = weights_dir() / "openai" / m[0] / m[1]
    return path if path.is_file() else None


def fetch_weights(spec: str, *, mirror: str | None = None, endpoint: str | None = None, progress: bool = True) -> Fetched:
    family, name, tag = parse_spec(spec)
    if family == "clip":
        cfg = open_clip_cfg(name, tag)
        usage = f"--model clip:{name} --model-arg pretrained={tag}"
        m = openai_url(cfg)
        if m is not None:
            return _fetch_openai(m, cfg["url"], mirror, progress, usage)
        hub = cfg.get("hf_hub") or ""
        if not hub:
            raise ValueError(f"{name}/{tag}: open_clip names neither an OpenAI archive nor a Hugging Face repo for it")
        repo, names = open_clip_hub_files(hub)
        path, how = _hf(repo, names, endpoint)
        return Fetched(path, f"Hugging Face {repo}: {how}", usage)
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub:
        raise ValueError(f"timm has no Hugging Face weights for {name!r}; name a pretrained tag, e.g. timm:resnet50.a1_in1k")
    filename = getattr(cfg, "hf_hub_filename", None)
    path, how = _hf(hub, [filename] if filename else ["model.safetensors", "pytorch_model.bin"], endpoint)
    return Fetched(path, f"Hugging Face {hub}: {how}", f"--model timm:{name} --model-arg weights={path}")


def _fetch_openai(archive: tuple[str, str], url: str, mirror: str | None, progress: bool, usage: str) -> Fetched:
    sha, filename = archive
    dest = weights_dir() / "openai" / sha / filename
    if dest.is_file():
        if sha256_file(dest) == sha:
            return Fetched(dest, f"already fetched; sha256 {sha[:12]}... matches its URL", usage)
        dest.replace(dest.with_name(filename + ".sha256-mismatch"))
    source = mirror.rstrip("/") + "/" + filename if mirror else url
    fetch(source, dest, sha, progress=progress)
    return Fetched(dest, f"sha256 {sha[:12]}... matches the one in its URL", usage)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_entries(cache: str | None, repo: str) -> dict[Path, bool]:
    """The Hugging Face cache folders a download of ``repo`` may create, each with whether it
    exists now (the repo's folder, its lock folder, the cache root and the folders above it)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    from harness.files import missing_folders

    root = Path(cache or constants.HF_HUB_CACHE)
    folder = repo_folder_name(repo_id=repo, repo_type="model")
    paths = [root / folder, root / ".locks" / folder, root / ".locks", root, *missing_folders(root)]
    return {p: p.exists() for p in paths}


def _forget(path: Path, existed: dict[Path, bool]) -> None:
    """Take a file that failed its check out of the cache, so that no later (offline) load finds
    it: the repo's folders if this download made them, else the file's link and blob; then the
    folders made for it, each only while empty."""
    import shutil

    repo_dir, locks, *above = existed
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)
    for folder in (repo_dir, locks):
        if not existed[folder]:
            shutil.rmtree(folder, ignore_errors=True)
    for folder in above:
        if existed[folder]:
            break
        (folder / "CACHEDIR.TAG").unlink(missing_ok=True)  # what huggingface_hub marks a new cache with
        try:
            folder.rmdir()
        except OSError:
            break


def _hf(repo: str, names: list[str], endpoint: str | None) -> tuple[Path, str]:
    """The first of ``names`` in ``repo`` through huggingface_hub's cache, and what verified it
    (the Hub's ETag of a Git LFS file is its sha256)."""
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
    )
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    cache = os.environ.get("HF_HUB_CACHE") or None
    if _offline():
        hit = hf_cached(repo, names)
        if hit is not None:
            return hit, "found in the Hugging Face cache (HF_HUB_OFFLINE set: nothing fetched or re-checked)"
        raise DownloadError(
            f"HF_HUB_OFFLINE is set and {repo}/{names[0]} is not in the Hugging Face cache "
            f"({cache or 'default HF_HUB_CACHE'}); fetch it once with network access"
        )
    errors = []
    for name in names:
        existed = _cache_entries(cache, repo)
        try:
            info = get_hf_file_metadata(hf_hub_url(repo, name, endpoint=endpoint))
            path = Path(hf_hub_download(repo, name, cache_dir=cache, endpoint=endpoint))
        except EntryNotFoundError:
            errors.append(f"{repo} has no {name}")
            continue
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise DownloadError(f"{repo}/{name}: {exc}") from None
        etag = (info.etag or "").strip('"')
        if not SHA256.match(etag):
            return path, "the Hub gives no sha256 for it (not a Git LFS file), so it is not verified"
        got = sha256_file(path)
        if got != etag:
            _forget(path, existed)
            raise DownloadError(
                f"{repo}/{name}: the file served has sha256 {got}, not the Hub's {etag}; it was removed "
                "from the Hugging Face cache, nothing is stored: fetch again, or use another --hf-endpoint"
            )
        return path, f"sha256 {etag[:12]}... matches the Hub's LFS ETag"
    raise DownloadError("; ".join(errors))
