"""ImageNet metadata read from installed packages (timm, open_clip), never pasted lists.

Class index = position of the wnid in sorted order (torchvision ImageFolder on the wnid folders),
which is the order of timm's ``imagenet_synsets.txt``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from harness.api import ClassMap

IMAGENET_LABEL_SPACE = "imagenet-1k"


def _timm_info(name: str) -> list[str]:
    text = resources.files("timm.data").joinpath("_info", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    wnids = tuple(_timm_info("imagenet_synsets.txt"))
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's imagenet_synsets.txt is not 1000 sorted wnids; reinstall timm")
    return wnids


@cache
def imagenet_classnames() -> tuple[str, ...]:
    """OpenAI's curated class names, by class index (contains duplicates: never invert it)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


@cache
def imagenet_templates() -> tuple[str, ...]:
    """OpenAI's 80 ImageNet prompt templates with a ``{c}`` placeholder."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES)


@cache
def subset_class_map(name: str) -> ClassMap:
    """The 200-class ImageNet-R (``"r"``) or ImageNet-A (``"a"``) subset as a class map.

    Targets are the subset's wnids in ascending ImageNet index order, which is also their sorted
    order, so target k is the k-th sorted wnid folder.
    """
    indices = [int(i) for i in _timm_info(f"imagenet_{name}_indices.txt")]
    wnids = _timm_info(f"imagenet_{name}_synsets.txt")
    all_wnids = imagenet_wnids()
    if (
        len(indices) != 200
        or indices != sorted(indices)
        or [all_wnids[i] for i in indices] != wnids
    ):
        raise RuntimeError(f"timm's imagenet_{name} metadata is inconsistent; reinstall timm")
    return ClassMap(
        name=f"imagenet-{name}",
        source=IMAGENET_LABEL_SPACE,
        targets=tuple(wnids),
        members=tuple((i,) for i in indices),
    )
