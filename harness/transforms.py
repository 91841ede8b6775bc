"""Eval transforms built from a model's ``PreprocessSpec``.

The transform is split in two so decoded images can be cached: ``geometry`` (decode-side:
RGB, resize, crop -> uint8 ``[3, H, W]``) and ``normalize`` (model-side: uint8 batch -> float,
mean/std). ``eval_transform`` composes both for the plain PIL path; it matches open_clip's and
timm's reference eval transforms (PIL resize with antialiasing, center crop).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from harness.api import PreprocessSpec

_PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _interpolation(name: str) -> Image.Resampling:
    try:
        return _PIL_INTERPOLATION[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; use one of {sorted(_PIL_INTERPOLATION)}") from None


def resized_size(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(width, height) after the spec's resize, with torchvision's rounding for an int size."""
    if spec.resize_mode == "squash":
        return spec.resize_size, spec.resize_size
    if spec.resize_mode != "shortest":
        raise ValueError(f"unknown resize_mode {spec.resize_mode!r}; use 'shortest' or 'squash'")
    if min(width, height) == spec.resize_size:
        return width, height
    if width <= height:
        return spec.resize_size, int(spec.resize_size * height / width)
    return int(spec.resize_size * width / height), spec.resize_size


def crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    """(left, top) of a centre crop, with torchvision.transforms.functional.center_crop rounding."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """RGB, resize as the spec says, crop to ``image_size`` (PIL in, PIL out)."""
    img = img.convert("RGB")
    interp = _interpolation(spec.interpolation)
    target = resized_size(*img.size, spec)
    if target != img.size or spec.resize_mode == "squash":
        img = img.resize(target, interp)
    if spec.crop == "center":
        size = spec.image_size
        left, top = crop_origin(*img.size, size)
        if left < 0 or top < 0:
            img = _pad_to(img, size)
            left, top = crop_origin(*img.size, size)
        img = img.crop((left, top, left + size, top + size))
    elif spec.crop != "none":
        raise ValueError(f"unknown crop {spec.crop!r}; use 'center' or 'none'")
    return img


def _pad_to(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    canvas = Image.new("RGB", (max(w, size), max(h, size)))
    canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return canvas


def geometry(spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 tensor ``[3, image_size, image_size]`` (the cacheable part)."""

    def apply(img: Image.Image) -> torch.Tensor:
        arr = np.asarray(resize_and_crop(img, spec), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    return apply


def normalize(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (or float in [0, 1]) -> normalised float32 on the batch's device."""
    x = batch.float()
    if batch.dtype == torch.uint8:
        x = x.div_(255.0)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def eval_transform(spec: PreprocessSpec) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float ``[3, H, W]``: ``geometry`` then ``normalize``."""
    geo = geometry(spec)

    def apply(img: Image.Image) -> torch.Tensor:
        return normalize(geo(img).unsqueeze(0), spec)[0]

    return apply
