"""Batched JPEG decoding on the run's device: nvJPEG on CUDA, libjpeg-turbo on CPU.

Loader workers read each JPEG's bytes without decoding them (``LazyExample.encoded``); the
main process decodes a whole batch with one ``torchvision.io.decode_jpeg`` call on the device
and applies the model's geometry there (resize with antialiasing, centre crop: the same sizes
and rounding as ``harness.transforms.resize_and_crop``). What this path cannot take — no
``encoded`` bytes, PNG, grayscale, CMYK, progressive, 12-bit, lossless or arithmetic-coded
JPEGs, truncated files — is decoded with PIL in the worker, exactly as the PIL path does, so
every image is decoded once either way. The same code runs with ``device="cpu"``, which is how
it is tested without a GPU. Pixels differ from PIL's by a few levels (another JPEG decoder,
tensor resampling), so the decoder is part of the image-cache key and of each result's provenance.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from harness.api import LazyExample, PreprocessSpec
from harness.transforms import crop_origin, geometry, resized_size

# Interpolations the tensor resize reproduces (antialiased, PIL's kernels).
TENSOR_INTERPOLATIONS = ("bicubic", "bilinear")

_SOF_BASELINE = (0xC0, 0xC1)  # sequential Huffman, the only kind sent to the batched decoder
_SOF_OTHER = {0xC2: "progressive", 0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical",
              0xC7: "hierarchical", 0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded",
              0xCB: "arithmetic-coded", 0xCD: "arithmetic-coded", 0xCE: "arithmetic-coded",
              0xCF: "arithmetic-coded"}  # fmt: skip
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field


def jpeg_fallback_reason(data: bytes) -> str | None:
    """None if ``data`` is a complete baseline 8-bit YCbCr JPEG, else why PIL decodes it.

    Reads only the marker segments before the scan; cheap enough for every image."""
    if data[:2] != b"\xff\xd8":
        return "not a JPEG"
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return "no end-of-image marker (truncated or trailing data)"
    pos, n, frame, adobe_transform = 2, len(data), None, None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return "corrupt marker structure"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return "corrupt marker segment"
        if marker in _SOF_OTHER:
            return _SOF_OTHER[marker]
        if marker in _SOF_BASELINE:
            frame = segment
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]
        elif marker == 0xDA:  # start of scan: the header is over
            break
        pos += 2 + length
    if frame is None or len(frame) < 6:
        return "no baseline frame header"
    precision, height, width, components = frame[0], int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    if precision != 8:
        return f"{precision}-bit samples"
    if components != 3:
        return {1: "grayscale", 4: "CMYK/YCCK"}.get(components, f"{components} components")
    if adobe_transform == 0:
        return "RGB-coded (Adobe transform 0)"
    if height == 0 or width == 0:
        return "height defined after the scan (DNL)"
    if too_many_pixels(width, height):
        return f"{width}x{height} pixels, over PIL's decompression-bomb limit (PIL refuses it unread)"
    return None


def too_many_pixels(width: int, height: int) -> bool:
    """PIL's own limit (``Image.MAX_IMAGE_PIXELS``, an error above twice it): the batched decoder
    would allocate such an image in full, so it goes to PIL, which refuses it from the header."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and width * height > 2 * limit


def tensor_geometry(img: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 ``[3, H, W]`` on any device -> uint8 ``[3, S, S]``: the sizes, rounding, padding
    and crop of ``harness.transforms.resize_and_crop``, resampled by torchvision (antialiased)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    if spec.interpolation not in TENSOR_INTERPOLATIONS:
        raise ValueError(f"tensor resize supports {TENSOR_INTERPOLATIONS}, not {spec.interpolation!r}")
    h, w = img.shape[-2:]
    new_w, new_h = resized_size(w, h, spec)
    if (new_w, new_h) != (w, h):
        mode = InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR
        img = resize(img, [new_h, new_w], interpolation=mode, antialias=True)
    if spec.crop == "none":
        return img
    if spec.crop != "center":
        raise ValueError(f"unknown crop {spec.crop!r}; use 'center' or 'none'")
    size = spec.image_size
    left, top = crop_origin(new_w, new_h, size)
    if left < 0 or top < 0:  # the PIL path pads to the crop size, image centred
        img = _paste(img, max(new_w, size), max(new_h, size), (max(new_w, size) - new_w) // 2, (max(new_h, size) - new_h) // 2)
        left, top = crop_origin(img.shape[-1], img.shape[-2], size)
    # PIL crops outside the image as black; so does this.
    return _paste(img[:, max(top, 0) : top + size, max(left, 0) : left + size], size, size, max(-left, 0), max(-top, 0))


def _paste(img: torch.Tensor, width: int, height: int, x: int, y: int) -> torch.Tensor:
    """``img`` on a black ``[3, height, width]`` canvas at (x, y), clipped to the canvas."""
    if (x, y) == (0, 0) and tuple(img.shape[-2:]) == (height, width):
        return img
    canvas = torch.zeros((img.shape[0], height, width), dtype=img.dtype, device=img.device)
    h, w = min(img.shape[-2], height - y), min(img.shape[-1], width - x)
    canvas[:, y : y + h, x : x + w] = img[:, :h, :w]
    return canvas


def worker_payload(ex: LazyExample, pil_geometry: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """In a loader worker: a JPEG's bytes (1-D uint8) for the batched decoder, or the image
    decoded by PIL and cropped (``[3, S, S]``) when the batched decoder cannot take it."""
    if ex.encoded is not None:
        data = ex.encoded()
        if jpeg_fallback_reason(data) is None:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return pil_geometry(ex.load())


def decode_jpegs(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """RGB uint8 images on ``device``; None where the decoder refuses an image.

    One batched call; if it fails (it gives no partial results), each image is retried alone."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to torchcodec
        try:
            return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            if len(data) == 1:
                return [None]
    return [decode_jpegs([d], device)[0] for d in data]


class BatchDecoder:
    """Worker payloads -> one uint8 ``[B, 3, S, S]`` batch on ``device``; counts what ran.

    An image neither the batched decoder nor PIL can read is left out of the batch and listed
    in ``failures`` as (index, message); the caller raises or skips it."""

    def __init__(self, spec: PreprocessSpec, device: torch.device, keys: Sequence[str]) -> None:
        self.spec, self.device, self.keys = spec, device, keys
        self.on_device = 0  # decoded by torchvision on the device
        self.with_pil = 0  # decoded by PIL (in a worker, or here after the decoder refused)
        self.failures: list[tuple[int, str]] = []
        self._pil_geometry = geometry(spec)

    def __call__(self, indices: Sequence[int], payloads: Sequence[torch.Tensor]) -> tuple[np.ndarray, torch.Tensor | None]:
        """(indices of the images decoded, their batch or None if there are none)."""
        out: list[torch.Tensor | None] = [None] * len(payloads)
        encoded = [k for k, p in enumerate(payloads) if p.ndim == 1]
        for k, p in enumerate(payloads):
            if p.ndim != 1:
                out[k] = p.to(self.device, non_blocking=True)
                self.with_pil += 1
        if encoded:
            images = decode_jpegs([payloads[k] for k in encoded], self.device)
            for k, img in zip(encoded, images, strict=True):
                if img is None:
                    out[k] = self._decode_with_pil(int(indices[k]), payloads[k])
                else:
                    out[k] = tensor_geometry(img, self.spec)
                    self.on_device += 1
        kept = [k for k, img in enumerate(out) if img is not None]
        batch = torch.stack([out[k] for k in kept]) if kept else None  # type: ignore[misc]
        return np.asarray([indices[k] for k in kept], dtype=np.int64), batch

    def _decode_with_pil(self, index: int, data: torch.Tensor) -> torch.Tensor | None:
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
                img.load()
                decoded = self._pil_geometry(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            self.failures.append((index, f"image {self.keys[index]!r}: cannot decode ({type(exc).__name__}: {exc})"))
            return None
        self.with_pil += 1
        return decoded.to(self.device)


def choose_decoder(requested: str, device: torch.device, spec: PreprocessSpec, model: str) -> str:
    """``pil`` or ``torchvision`` for one cell: ``auto`` takes torchvision on CUDA where the
    model's resize can be reproduced, PIL otherwise; ``torchvision`` asked for on a model
    whose resize cannot be reproduced is an error."""
    if requested == "pil":
        return "pil"
    supported = spec.interpolation in TENSOR_INTERPOLATIONS
    if requested == "torchvision":
        if not supported:
            raise ValueError(
                f"--decoder torchvision reproduces {' and '.join(TENSOR_INTERPOLATIONS)} resizing, but model "
                f"{model!r} uses {spec.interpolation!r}; use --decoder pil or auto"
            )
        return "torchvision"
    if requested != "auto":
        raise ValueError(f"unknown decoder {requested!r}; use auto, pil or torchvision")
    return "torchvision" if device.type == "cuda" and supported else "pil"


def decoder_label(decoder: str, device: torch.device) -> str:
    """What results and cache keys record: ``pil``, ``torchvision:cuda`` (nvJPEG) or ``torchvision:cpu``."""
    return decoder if decoder == "pil" else f"{decoder}:{device.type}"
