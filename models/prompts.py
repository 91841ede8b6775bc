"""Class names and prompt templates for zero-shot heads, by name or from a file.

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


def load_classnames(spec: str) -> tuple[str, list[str]]:
    """``imagenet-1k`` or a file -> (identifier for provenance, names in class-id order)."""
    if spec == "imagenet-1k":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return spec, list(IMAGENET_CLASSNAMES)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"class names {spec!r}: neither a known set ({', '.join(CLASSNAME_SETS)}) nor a file")
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
