"""Class names and prompt templates for zero-shot heads, by name or from a file.

``objectnet:DIR`` reads ObjectNet's 113 class names from the dataset's ``mappings/`` folder.
Named sets come from open_clip's package data (OpenAI's ImageNet class names and 80
templates, the 7 "simple" templates) and from ``models/data/templates.json`` (WILDS prompt
sets). Files: one entry per line (``.txt``) or a JSON list; templates use ``{}`` or ``{c}``.
The OpenAI class-name list has duplicates ("missile", "sunglasses"): names are a list
indexed by class id, never a name -> index dict.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

CLASSNAME_SETS = ("imagenet-1k",)
TEMPLATE_SETS = ("openai-imagenet-80", "simple-imagenet-7", "iwildcam-2", "fmow-16")


@cache
def _shipped_templates() -> dict[str, list[str]]:
    data = json.loads(resources.files("models").joinpath("data/templates.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _lambda_to_format(template) -> str:
    # open_clip templates are lambdas of the class name; recover the format string.
    marker = "\x00CLASS\x00"
    text = template(marker)
    return text.replace("{", "{{").replace("}", "}}").replace(marker, "{}")


def _read_list(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); expected a list of strings") from exc
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"{path}: expected a JSON list of strings")
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError(f"{path}: no {what} found; expected one per line or a JSON list")
    return items


def _file_id(path: Path) -> str:
    return f"file:{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def objectnet_classnames(mappings: Path) -> list[str]:
    """ObjectNet's 113 ImageNet-overlapping classes for a 113-way head, from the dataset's own
    ``mappings/`` folder: classes ordered by *folder name* (the label order of the ObjectNet
    shift), each named by its ObjectNet label lower-cased (as CLIP_benchmark / open_clip)."""
    files = {}
    for name in ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json"):
        path = mappings / name
        if not path.is_file():
            raise FileNotFoundError(f"ObjectNet mapping file not found: {path} (expected the mappings/ folder of objectnet-1.0)")
        try:
            files[name] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(files[name], dict):
            raise ValueError(f"{path}: expected a JSON object")
    folder_to_label = files["folder_to_objectnet_label.json"]
    overlap = set(files["objectnet_to_imagenet_1k.json"])
    folders = sorted(f for f, label in folder_to_label.items() if label in overlap)
    labels = [folder_to_label[f] for f in folders]
    if len(set(labels)) != len(labels) or set(labels) != overlap:
        missing = sorted(overlap - set(labels))
        raise ValueError(f"{mappings}: the two mapping files disagree (labels without exactly one folder: "
                         f"{missing[:5] or sorted({x for x in labels if labels.count(x) > 1})[:5]})")
    return [label.lower() for label in labels]


def load_classnames(spec: str) -> tuple[str, list[str]]:
    """``imagenet-1k``, ``objectnet:MAPPINGS_DIR`` or a file -> (identifier, names in class-id order)."""
    if spec == "imagenet-1k":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return spec, list(IMAGENET_CLASSNAMES)
    if spec.startswith("objectnet:"):
        mappings = Path(spec[len("objectnet:"):]).expanduser()
        names = objectnet_classnames(mappings)
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
        return f"objectnet-{len(names)}:{digest}", names
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"class names {spec!r}: neither a known set ({', '.join(CLASSNAME_SETS)}), "
                                "objectnet:MAPPINGS_DIR, nor a file")
    return _file_id(path), _read_list(path, "class names")


def load_templates(spec: str) -> tuple[str, list[str]]:
    """A named template set or a file -> (identifier, ``str.format`` templates with one ``{}``)."""
    if spec in ("openai-imagenet-80", "simple-imagenet-7"):
        from open_clip.zero_shot_metadata import (
            OPENAI_IMAGENET_TEMPLATES,
            SIMPLE_IMAGENET_TEMPLATES,
        )

        src = OPENAI_IMAGENET_TEMPLATES if spec == "openai-imagenet-80" else SIMPLE_IMAGENET_TEMPLATES
        return spec, [_lambda_to_format(t) for t in src]
    if spec in _shipped_templates():
        return spec, list(_shipped_templates()[spec])
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"templates {spec!r}: neither a known set ({', '.join(TEMPLATE_SETS)}) nor a file")
    templates = [t.replace("{c}", "{}") for t in _read_list(path, "templates")]
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"{path}: template {t!r} must contain the class placeholder {{}} (or {{c}}) exactly once")
    return _file_id(path), templates
