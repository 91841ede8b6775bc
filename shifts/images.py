"""Decoding images with errors that name the file and the fix."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff")

# Truncated files must fail loudly, never decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(ValueError):
    """An image that cannot be decoded; ``key`` identifies it for skip-and-record."""

    def __init__(self, key: str, where: str, reason: str) -> None:
        self.key = key
        super().__init__(
            f"{where}: cannot decode image ({reason}); re-download or replace this file, "
            "or rerun with --skip-bad-images to skip it and record its key in the result"
        )


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(data: bytes | Path, key: str, where: str) -> Image.Image:
    """Fully decode ``data`` (bytes or a path) to an RGB PIL image."""
    try:
        src = io.BytesIO(data) if isinstance(data, bytes | bytearray) else open(data, "rb")
        with src, Image.open(src) as img:
            img.load()
            return img.convert("RGB")
    except (
        OSError,
        UnidentifiedImageError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise BadImageError(key, where, f"{type(exc).__name__}: {exc}") from exc


def crop_border(img: Image.Image, pixels: int) -> Image.Image:
    """Remove ``pixels`` from every side, as ObjectNet's reference does (box (p, p, w-p, h-p))."""
    w, h = img.size
    if w <= 2 * pixels or h <= 2 * pixels:
        return img
    return img.crop((pixels, pixels, w - pixels, h - pixels))
