"""ImageNet metadata read from installed packages (timm, open_clip), never pasted lists.

Class index = position of the wnid in sorted order (torchvision ImageFolder on the wnid folders),
which is the order of timm's ``imagenet_synsets.txt``.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

from harness.api import ClassMap

IMAGENET_LABEL_SPACE = "imagenet-1k"


def _package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it (importing timm or open_clip
    pulls in torch and takes seconds; the metadata files do not need that)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"package {name!r} is not installed; reinstall shiftbench's dependencies"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _timm_info(name: str) -> list[str]:
    text = (_package_dir("timm") / "data" / "_info" / name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@cache
def _open_clip_metadata() -> dict[str, ast.expr]:
    """Top-level assignments of ``open_clip/zero_shot_metadata.py``, parsed, not executed."""
    path = _package_dir("open_clip") / "zero_shot_metadata.py"
    tree = ast.parse(path.read_text(), str(path))
    return {
        t.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def _template(node: ast.expr) -> str:
    """``lambda c: f'a photo of a {c}.'`` -> ``'a photo of a {c}.'``."""
    if not (isinstance(node, ast.Lambda) and isinstance(node.body, ast.JoinedStr)):
        raise RuntimeError(
            "open_clip's templates are no longer f-string lambdas; update shifts.imagenet_meta"
        )
    out = []
    for part in node.body.values:
        if isinstance(part, ast.Constant):
            out.append(str(part.value).replace("{", "{{").replace("}", "}}"))
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
            out.append("{c}")
        else:
            raise RuntimeError(
                "unexpected expression in an open_clip template; update shifts.imagenet_meta"
            )
    return "".join(out)


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
    names = tuple(ast.literal_eval(_open_clip_metadata()["IMAGENET_CLASSNAMES"]))
    if len(names) != 1000:
        raise RuntimeError(
            "open_clip's IMAGENET_CLASSNAMES is not 1000 names; reinstall open_clip_torch"
        )
    return names


@cache
def imagenet_templates() -> tuple[str, ...]:
    """OpenAI's 80 ImageNet prompt templates with a ``{c}`` placeholder."""
    node = _open_clip_metadata()["OPENAI_IMAGENET_TEMPLATES"]
    return tuple(_template(e) for e in node.elts)


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
