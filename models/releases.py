"""Known weight releases, recognised by the sha256 of the file.

A release fixes what a checkpoint alone cannot say: the activation it was trained with and
the published accuracies it should reproduce. OpenAI's CLIP archives carry their full sha256
in their download URLs, open_clip's own GitHub releases the first 8 hex digits of it in their
file names; both are read from open_clip's pretrained table (the same checks open_clip's
downloader makes), so nothing here is typed in by hand. timm's weights published as files
named ``NAME-<sha256 prefix>.pth`` (torch.hub's convention, checked by its downloader) are read
from timm's pretrained configs the same way; those timm publishes only on the Hugging Face Hub
are known by their place in the local Hub cache, whose blobs are named by their sha256.
torchvision's are read from its weights enums, which also say the eval transform each was
measured with and its published ImageNet top-1. Weights taken from the local Hugging Face cache
with ``pretrained=TAG`` are the release of that tag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

#: Head a published zero-shot figure was measured with (class names, templates): open_clip's
#: benchmark and OpenAI's paper use OpenAI's ImageNet class names and 80 templates.
STANDARD_HEAD = ("imagenet-1k", "openai-imagenet-80")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Release:
    """One published checkpoint: what it is, how it was trained, where its numbers are."""

    arch: str
    tag: str
    sha256: str  # the full hash, or the prefix the publisher gives (open_clip: 8 hex digits)
    activation: str  # "quickgelu" or "gelu"; "" for models without the choice (timm)
    published: str  # the model's name in the bundled testbed (``clip:ARCH@TAG``, timm's ``ARCH.TAG``)
    head: tuple[str, str] | None = STANDARD_HEAD  # None: the checkpoint's own classifier head
    top1: float | None = None  # ImageNet top-1 the release publishes itself (torchvision's meta), a fraction

    def matches(self, sha256: str) -> bool:
        return bool(self.sha256) and sha256.lower().startswith(self.sha256)


#: Releases added at run time (tests, or a project's own published models): sha256 -> Release.
EXTRA: dict[str, Release] = {}


#: OpenAI's CLIP archives: ``https://<host>/clip/models/<sha256>/<file>.pt``.
OPENAI_URL = re.compile(r"^https?://[^/]+/clip/models/([0-9a-f]{64})/([^/]+\.pt)$")


def openai_archive(url: str) -> tuple[str, str] | None:
    """(sha256, file name) of an OpenAI CLIP archive URL, whose path carries the file's full sha256."""
    m = OPENAI_URL.match(url or "")
    return (m.group(1), m.group(2)) if m else None


def url_sha256(url: str) -> str | None:
    """The checksum open_clip's downloader checks for ``url`` (full or prefix), if any."""
    name = os.path.basename(url)
    if (archive := openai_archive(url)) is not None:
        return archive[0]
    if "mlfoundations" in url:
        digest = os.path.splitext(name)[0].split("-")[-1]
    else:
        return None
    return digest.lower() if _HEX.match(digest.lower()) else None


def activation_of(arch: str, tag: str | None) -> str:
    """The activation open_clip builds ``arch`` with for ``tag`` (a tag may force QuickGELU)."""
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    quick = bool(cfg.get("quick_gelu"))
    if tag:
        quick = quick or bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"))
    return "quickgelu" if quick else "gelu"


@lru_cache(maxsize=1)
def open_clip_releases() -> tuple[Release, ...]:
    """Every (architecture, tag) of open_clip's pretrained table whose file has a checksum."""
    import open_clip

    out = []
    for arch, tag in open_clip.list_pretrained():
        digest = url_sha256(open_clip.get_pretrained_cfg(arch, tag).get("url", ""))
        if digest:
            out.append(Release(arch, tag, digest, activation_of(arch, tag), f"clip:{arch}@{tag}"))
    return tuple(out)


_TORCH_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$")


@lru_cache(maxsize=64)
def timm_releases(arch: str) -> tuple[Release, ...]:
    """timm's pretrained weights of ``arch`` whose file name carries a sha256 prefix (torch.hub's rule)."""
    import timm
    from timm.models import get_pretrained_cfg

    out = []
    for name in timm.list_pretrained(f"{arch}.*"):
        cfg = get_pretrained_cfg(name)
        match = _TORCH_HUB_HASH.search(getattr(cfg, "url", None) or "")
        if match:
            arch, _, tag = name.partition(".")
            out.append(Release(arch, tag, match.group(1), "", name, None))
    return tuple(out)


@lru_cache(maxsize=64)
def torchvision_releases(arch: str) -> tuple[Release, ...]:
    """torchvision's weights of ``arch`` whose file name carries a sha256 prefix (torch.hub's rule),
    read from its weights enum: the tag is the recipe whose eval transform each was measured with
    (``IMAGENET1K_V1``), ``top1`` the ImageNet top-1 torchvision publishes (``meta["_metrics"]``)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        return ()
    out = []
    for entry in enum:
        match = _TORCH_HUB_HASH.search(entry.url or "")
        if match:
            acc = ((entry.meta.get("_metrics") or {}).get("ImageNet-1K") or {}).get("acc@1")
            out.append(Release(arch, entry.name, match.group(1), "", f"torchvision:{arch}@{entry.name}", None,
                               None if acc is None else float(acc) / 100))
    return tuple(out)


def find_torchvision_release(sha256: str, arch: str) -> Release | None:
    return next((r for r in torchvision_releases(arch) if r.matches(sha256)), None)


#: A file in the Hugging Face cache: ``.../models--ORG--NAME/blobs/<sha256>`` for a Git LFS file
#: (what the snapshot's ``model.safetensors`` links to), named by the sha256 the Hub gave for it.
_HF_BLOB = re.compile(r"/models--([^/]+?)--([^/]+)/blobs/([0-9a-f]{64})$")


def hf_cache_origin(path: str | os.PathLike, sha256: str) -> str | None:
    """The Hub repo (``timm/resnet50.a1_in1k``) a weights file in the Hugging Face cache came
    from: its snapshot entry resolves to an LFS blob whose name, the Hub's sha256 of the file,
    is the file's own ``sha256``. None for any other file (a copy out of the cache included)."""
    match = _HF_BLOB.search(os.path.realpath(path))
    if match is None or match.group(3) != sha256.lower():
        return None
    return f"{match.group(1)}/{match.group(2)}"


def timm_release_of(sha256: str, arch: str, path: str | os.PathLike) -> tuple[str, str] | None:
    """(timm's pretrained name ``ARCH.TAG``, how it was identified) of a weights file: by the
    sha256 prefix in the file name timm publishes (torch.hub's rule), or, for weights timm
    publishes only on the Hub, by the file's place in the Hugging Face cache under
    ``timm/ARCH.TAG`` with the Hub's sha256. ``arch`` may carry a tag; the architecture must match."""
    base = arch.partition(".")[0]
    release = find_release(sha256, base, timm_arch=base)
    if release is not None and release.head is None:
        return release.published, f"sha256 {sha256[:12]}... (the prefix in timm's file name)"
    origin = hf_cache_origin(path, sha256)
    if origin is None or not origin.startswith("timm/"):
        return None
    import timm

    name = origin.partition("/")[2]
    if name.partition(".")[0] != base or name not in timm.list_pretrained(name):
        return None
    return name, f"the Hugging Face cache: {origin}, sha256 {sha256[:12]}... as the Hub gave it"


def releases_for(sha256: str, timm_arch: str | None = None) -> list[Release]:
    """Every known release whose checksum ``sha256`` has (one file may serve several
    architecture names, e.g. ``ViT-B-32`` and ``ViT-B-32-quickgelu`` for OpenAI's); timm's
    of ``timm_arch`` when given (timm's table is read only for a timm model)."""
    table = timm_releases(timm_arch) if timm_arch else open_clip_releases()
    return [r for r in (*EXTRA.values(), *table) if r.matches(sha256)]


def find_release(sha256: str, arch: str, timm_arch: str | None = None) -> Release | None:
    """The release of a file, preferring the one listed under the architecture asked for."""
    hits = releases_for(sha256, timm_arch)
    return next((r for r in hits if r.arch == arch), hits[0] if hits else None)


def tagged_release(arch: str, tag: str) -> Release:
    """The release ``pretrained=TAG`` names (its weights come from that tag's own files)."""
    return Release(arch, tag, "", activation_of(arch, tag), f"clip:{arch}@{tag}")
