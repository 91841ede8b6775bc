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

    SKIP_ADVICE = (
        "re-download or replace this file, "
        "or rerun with --skip-bad-images to skip it and record its key in the result"
    )

    def __init__(self, key: str, where: str, reason: str, advice: str = SKIP_ADVICE) -> None:
        self.key, self.where, self.reason = key, where, reason
        super().__init__(f"{where}: cannot decode image ({reason}); {advice}")


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


def _rgb_image(size: tuple[int, int], data: bytes) -> Image.Image:
    return Image.frombytes("RGB", size, data)


class DeferredImage(Image.Image):
    """An RGB PIL image that decodes on first use (pixels, size or any PIL method).

    Shifts hand these to ``transform`` so a transform that ignores some images (a manifest pass,
    a loader worker taking every n-th example) never pays for decoding them. Decoding errors
    surface, as :class:`BadImageError`, from whatever touched the image first.
    """

    _produce = None

    def __init__(self, produce) -> None:
        super().__init__()
        self._mode = "RGB"
        self._produce = produce

    def __reduce_ex__(self, protocol):
        """Pickles (e.g. out of a loader worker) as a plain, decoded PIL image."""
        self.materialize()
        return _rgb_image, (self._size, self.tobytes())

    def materialize(self) -> DeferredImage:
        if self._produce is not None:
            produce, self._produce = self._produce, None
            img = produce()
            if img.mode != "RGB":
                img = img.convert("RGB")
            self._im, self._size, self.info = img.im, img.size, dict(img.info)
        return self

    @property
    def im(self):  # type: ignore[override]
        self.materialize()
        return Image.Image.im.fget(self)

    @im.setter
    def im(self, value) -> None:
        self._im = value

    @property
    def size(self) -> tuple[int, int]:  # type: ignore[override]
        self.materialize()
        return self._size

    def load(self):
        self.materialize()
        return super().load()
