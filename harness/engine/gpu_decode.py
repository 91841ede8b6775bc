"""Batched JPEG decoding on the run's device: nvJPEG on CUDA, libjpeg-turbo on CPU.

Loader workers read each JPEG's bytes without decoding them (``LazyExample.encoded``); the
main process decodes a whole batch with one ``torchvision.io.decode_jpeg`` call on the device
and applies the model's geometry there (resize with antialiasing, centre crop: the same sizes
and rounding as ``harness.transforms.resize_and_crop``, resampled within one level of PIL on
the CPU and with PIL's own arithmetic elsewhere). What this path cannot take — no
``encoded`` bytes, PNG, grayscale, CMYK, progressive, 12-bit, lossless or arithmetic-coded
JPEGs, truncated files — is decoded with PIL in the worker, exactly as the PIL path does, so
every image is decoded once either way. The same code runs with ``device="cpu"``, which is how
it is tested without a GPU. The decoder is part of each cell's identity, of the image-cache
key and of each result's protocol and provenance, with its fidelity class (``FIDELITY``):
nvJPEG upsamples 4:2:0 chroma its own way, so its pixels are not PIL's.
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
    and crop of ``harness.transforms.resize_and_crop``, resampled within one level of PIL
    (``resize_uint8``)."""
    if spec.interpolation not in TENSOR_INTERPOLATIONS:
        raise ValueError(f"tensor resize supports {TENSOR_INTERPOLATIONS}, not {spec.interpolation!r}")
    h, w = img.shape[-2:]
    new_w, new_h = resized_size(w, h, spec)
    if (new_w, new_h) != (w, h):
        img = resize_uint8(img, new_w, new_h, spec.interpolation)
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


def resize_uint8(img: torch.Tensor, width: int, height: int, interpolation: str) -> torch.Tensor:
    """Antialiased resize of a uint8 ``[3, H, W]`` image within one level of PIL's.

    On the CPU, where torchvision has its native uint8 kernel for the mode (PIL's fixed-point
    scheme, measured within one level on photo-sized images), that kernel; everywhere else
    (CUDA; bilinear on a CPU without AVX2) ``pil_resize``, PIL's arithmetic in integer tensor
    ops. torchvision's own resize there goes through float32 and a single rounding, up to 5-6
    levels off PIL on photo-sized images."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    mode = InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR
    if img.device.type == "cpu" and _native_uint8_kernel(mode):
        return resize(img, [height, width], interpolation=mode, antialias=True)
    return pil_resize(img, width, height, interpolation)


def _native_uint8_kernel(mode: object) -> bool:
    """Whether torchvision resizes uint8 images on this CPU with its native kernel (it decides
    by mode and CPU capability); if that cannot be told, no."""
    try:
        from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu
    except ImportError:
        return False
    return bool(_do_native_uint8_resize_on_cpu(mode))


# PIL's Resample.c: 8-bit images are resampled with coefficients in fixed point.
_PRECISION_BITS = 32 - 8 - 2


def _bicubic(x: np.ndarray) -> np.ndarray:
    a, x = -0.5, np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1, np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


def pil_coefficients(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """PIL's resampling taps for one axis: (first input index ``[out]``, integer weights
    ``[out, k]``), as ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` compute them."""
    kernel, support = _FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    centers = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C's (int) truncates
    last = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(ksize)[None, :]
    valid = taps < (last - first)[:, None]
    weights = np.where(valid, kernel((taps + first[:, None] - centers[:, None] + 0.5) / filterscale), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=weights, where=totals != 0)
    scaled = weights * (1 << _PRECISION_BITS)
    return first, np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)


_TAP_ELEMENTS = 1 << 25  # int64 products held at once per pass (256 MiB): bounds memory on huge photos


def _resample_last_axis(img: torch.Tensor, out_size: int, interpolation: str) -> torch.Tensor:
    """One separable pass along the last axis in integer arithmetic; uint8 out, as PIL."""
    first, weights = pil_coefficients(img.shape[-1], out_size, interpolation)
    ksize = weights.shape[1]
    index = torch.from_numpy(np.minimum(first[:, None] + np.arange(ksize), img.shape[-1] - 1)).to(img.device)
    weights_t = torch.from_numpy(weights).to(img.device)
    rows = max(1, img[..., 0].numel())
    step = max(1, _TAP_ELEMENTS // (rows * ksize))
    out = torch.empty((*img.shape[:-1], out_size), dtype=torch.uint8, device=img.device)
    for start in range(0, out_size, step):
        taps = img[..., index[start : start + step]].to(torch.int64)  # [..., out, k]; taps past the end weigh 0
        acc = (taps * weights_t[start : start + step]).sum(dim=-1) + (1 << (_PRECISION_BITS - 1))
        out[..., start : start + step] = torch.clamp(acc >> _PRECISION_BITS, 0, 255)
    return out


def pil_resize(img: torch.Tensor, width: int, height: int, interpolation: str) -> torch.Tensor:
    """uint8 ``[C, H, W]`` -> ``[C, height, width]``, equal to PIL's ``Image.resize`` (bicubic or
    bilinear, antialiased) on any device: PIL's taps and fixed-point weights, the horizontal
    pass first and rounded to 8 bits, then the vertical pass. Integer ops only, so the CUDA
    result is the CPU result (which is how it is tested)."""
    if img.dtype != torch.uint8:
        raise ValueError(f"pil_resize takes uint8 images, not {img.dtype}")
    if img.shape[-1] != width:
        img = _resample_last_axis(img, width, interpolation)
    if img.shape[-2] != height:
        img = _resample_last_axis(img.transpose(-1, -2), height, interpolation).transpose(-1, -2).contiguous()
    return img


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


class PackedPayloads:
    """One batch of worker payloads in (at most) two tensors: the JPEG bytes back to back, and
    the images PIL decoded in the worker stacked.

    Every tensor a loader worker sends travels as its own shared-memory file descriptor, held
    open until the batch is consumed: one per image would exhaust a 1,024-descriptor limit
    at ``--batch-size 256`` with two workers running ahead."""

    def __init__(self, payloads: Sequence[torch.Tensor]) -> None:
        encoded = [p for p in payloads if p.ndim == 1]
        decoded = [p for p in payloads if p.ndim != 1]
        self.is_encoded = [p.ndim == 1 for p in payloads]
        self.offsets = np.cumsum([0, *(len(p) for p in encoded)]).tolist()
        self.encoded = torch.cat(encoded) if encoded else torch.zeros(0, dtype=torch.uint8)
        self.decoded = torch.stack(decoded) if decoded else None

    def __len__(self) -> int:
        return len(self.is_encoded)

    def items(self) -> list[torch.Tensor]:
        """The payloads in batch order: 1-D bytes (views of one buffer) or ``[3, S, S]`` images."""
        out, e, d = [], 0, 0
        for encoded in self.is_encoded:
            if encoded:
                out.append(self.encoded[self.offsets[e] : self.offsets[e + 1]])
                e += 1
            else:
                assert self.decoded is not None
                out.append(self.decoded[d])
                d += 1
        return out


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
    """``pil`` or ``torchvision`` for one cell. ``auto`` is PIL: the batched path's effect on
    top-1 (nvJPEG's chroma upsampling, above all) has not been measured against PIL on
    ImageNet-sized photos, and ``auto`` takes it only once it has been (docs/engine.md).
    ``torchvision`` asked for on a model whose resize cannot be reproduced is an error."""
    if requested in ("pil", "auto"):
        return "pil"
    if requested != "torchvision":
        raise ValueError(f"unknown decoder {requested!r}; use auto, pil or torchvision")
    if spec.interpolation not in TENSOR_INTERPOLATIONS:
        raise ValueError(
            f"--decoder torchvision reproduces {' and '.join(TENSOR_INTERPOLATIONS)} resizing, but model "
            f"{model!r} uses {spec.interpolation!r}; use --decoder pil or auto"
        )
    return "torchvision"


def decoder_label(decoder: str, device: torch.device) -> str:
    """What results and cache keys record: ``pil``, ``torchvision:cuda`` (nvJPEG) or ``torchvision:cpu``."""
    return decoder if decoder == "pil" else f"{decoder}:{device.type}"


def planned_decoder(requested: str, device: torch.device) -> str:
    """The decoder label a run's cells use, known before any model is built (part of each
    cell's identity: a run directory never mixes decoders)."""
    return "pil" if requested in ("pil", "auto") else decoder_label("torchvision", device)


# How close each decoder's pixels are to the PIL path's (recorded with every result):
# exact-pil: the PIL path itself. libjpeg-turbo: the same JPEG decoder as Pillow, resized
# within one level of PIL. nvjpeg: another JPEG decoder, whose default chroma upsampling of
# 4:2:0 images is not libjpeg's, so pixels differ by more (top-1 effect unmeasured).
FIDELITY = {"pil": "exact-pil", "torchvision:cpu": "libjpeg-turbo", "torchvision:cuda": "nvjpeg"}


def decoder_fidelity(label: str) -> str:
    return FIDELITY.get(label, label)
