"""How a cell's forward runs: device, precision and memory layout, decided by the engine alone.

``--precision`` means, for every model:

- ``fp32``: fp32 weights and activations (on CUDA with TF32 turned off for the pass: true fp32).
- ``bf16`` / ``fp16``: fp32 weights under ``torch.autocast`` (matmuls, convolutions and
  attention run in the low precision, reductions such as softmax and normalisation in fp32).
- ``bf16-weights``: the weights themselves cast to bf16 for the pass, input in bf16 too (no
  autocast casts; on a CPU with native bf16 measured faster than autocast for ViT-B-32). The
  fp32 weights are kept and put back after the pass, so merging, hashing and the fp32
  agreement check see the original values.

Convolutional models (a 2-D convolution that slides: ResNets, ConvNeXts; not a ViT's patch
embedding) run with ``channels_last`` weights and input, which oneDNN and cuDNN run faster.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS = {"bf16-weights": torch.bfloat16}


@dataclass(frozen=True)
class Numerics:
    """What one precision setting means for one model on one device."""

    precision: str  # the setting asked for
    autocast: torch.dtype | None
    weights: torch.dtype | None  # parameters cast to this for the pass (None: as loaded, fp32)
    channels_last: bool

    @property
    def label(self) -> str:
        """What actually runs, as recorded in every cell: fp32, bf16-autocast, bf16-weights."""
        if self.weights is not None:
            return f"{_short(self.weights)}-weights"
        if self.autocast is not None:
            return f"{_short(self.autocast)}-autocast"
        return "fp32"

    @property
    def reduced(self) -> bool:
        return self.autocast is not None or self.weights is not None

    def record(self, device: torch.device) -> dict[str, Any]:
        """The stats every cell stores about its forward."""
        out: dict[str, Any] = {"numerics": self.label, "memory_format": "channels_last" if self.channels_last else "contiguous"}
        if device.type == "cpu":
            out["cpu_capability"] = cpu_capability()
        return out


def _short(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def cpu_capability() -> str:
    """torch's name for the vector ISA its CPU kernels use here (AVX512, AVX2, ...)."""
    return str(torch.backends.cpu.get_cpu_capability())


def native_bf16_cpu() -> bool:
    """True when this CPU computes bf16 in hardware (AVX-512 BF16 or AMX); otherwise torch
    emulates it and bf16 runs slower than fp32."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def is_convolutional(model: Any) -> bool:
    """Has a 2-D convolution that slides (kernel size != stride): a CNN, where channels_last
    pays. A ViT's patch embedding (kernel = stride = patch size) does not count."""
    if not isinstance(model, torch.nn.Module):
        return False
    return any(isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) != tuple(m.stride) for m in model.modules())


def plan(precision: str, model: Any) -> Numerics:
    """The forward for ``precision`` and this model; refuses what cannot run as asked."""
    if precision in WEIGHTS and not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"--precision {precision} casts a model's weights, but model {getattr(model, 'name', model)!r} is not a "
            "torch module; use --precision bf16 (autocast) for it"
        )
    if precision not in ("fp32", *AUTOCAST, *WEIGHTS):
        raise ValueError(f"unknown precision {precision!r}; use fp32, bf16, fp16 or bf16-weights")
    return Numerics(precision, AUTOCAST.get(precision), WEIGHTS.get(precision), is_convolutional(model))


def warn_if_emulated(numerics: Numerics, device: torch.device) -> None:
    """bf16 on a CPU without native bf16 runs, but slower than fp32: say so once per cell."""
    if device.type == "cpu" and numerics.reduced and numerics.precision != "fp16" and not native_bf16_cpu():
        print(f"warning: --precision {numerics.precision} on this CPU (capability {cpu_capability()}, no native bf16) "
              "is emulated and slower than fp32; use --precision fp32 here", file=sys.stderr)


def place(model: Any, device: torch.device) -> None:
    """Put a torch classifier (an ensemble with all its members) on ``device`` in eval mode;
    its ``logits`` then run there. Other classifiers follow their input."""
    if isinstance(model, torch.nn.Module):
        model.to(device).eval()


def _floating_tensors(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            yield t


@contextlib.contextmanager
def applied(model: Any, numerics: Numerics) -> Iterator[None]:
    """The model's weights in the numerics' dtype and layout for the pass, then exactly as before.

    The original tensors are held, not copied, and swapped back on exit (also on errors), so an
    fp32 model is bit-identical afterwards whatever ran in between."""
    if not isinstance(model, torch.nn.Module) or (numerics.weights is None and not numerics.channels_last):
        yield
        return
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for t in _floating_tensors(model):
                new = t.data
                if numerics.weights is not None:
                    new = new.to(numerics.weights)
                if numerics.channels_last and new.ndim == 4:
                    new = new.contiguous(memory_format=torch.channels_last)
                if new is not t.data:
                    saved.append((t, t.data))
                    t.data = new
        yield
    finally:
        for t, original in saved:
            t.data = original
