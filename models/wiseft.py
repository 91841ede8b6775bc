"""WiSE-FT (Wortsman et al. 2022) and PAINT-style patching (Ilharco et al. 2022) classifiers.

``theta_alpha = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` over the image tower
and the classification head, in fp32 (``mode=full``, WiSE-FT). ``mode=encoder`` interpolates
the image tower only and keeps the zero-shot head frozen (PAINT's per-task heads). A zero-shot
checkpoint without a head gets one from its own text tower, scaled by its learned logit scale
(as WiSE-FT builds it). For linear probes (identical encoders) ``interpolate_logits`` gives
every alpha from the two endpoints' stored logits, with no forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.api import Predictions
from models.checkpoints import file_sha256, load_into, load_state_dict, state_dict_sha256
from models.classifiers import ImageHeadClassifier
from models.clip import (
    HEAD_KEYS,
    TEXT_HEAD_OPTIONS,
    activation_info,
    build_image_classifier,
    check_same_activation,
    create_open_clip,
    fit_clip_state,
    head_options,
    label_space_for,
    preprocess_spec_from_open_clip,
    resolve_activation,
    resolve_arch,
    split_classifier_state,
    zeroshot_head,
)
from models.ensembles import align_keys
from models.merging import interpolate
from models.options import Options

MODES = ("full", "encoder")
SHORT_HASH = 8  # hex digits of a weights hash in a default name
WISEFT_OPTIONS = ("zeroshot", "finetuned", "alpha", "mode", "pretrained", "config", "activation", *TEXT_HEAD_OPTIONS,
                  "label_space", "name")


def is_encoder_key(key: str) -> bool:
    """The image tower's parameters, whatever prefix the checkpoint saves them under: what
    encoder-only patching (PAINT) interpolates; everything else (heads) stays zero-shot."""
    return key.startswith("visual.") or ".visual." in key


def wiseft_weights(zeroshot, finetuned, alpha: float, mode: str = "full",
                   labels: tuple[str, str] | None = None) -> dict[str, torch.Tensor]:
    """The WiSE-FT (``full``) or patched (``encoder``) weights at ``alpha``: the one recipe the
    ``wiseft`` model, the engine's sweeps and ``shiftbench merge`` share."""
    if mode not in MODES:
        raise ValueError(f"WiSE-FT mode {mode!r}: expected one of {', '.join(MODES)}")
    return interpolate(zeroshot, finetuned, alpha, select=is_encoder_key if mode == "encoder" else None, labels=labels)


def wiseft_label(arch: str, zeroshot_id: str, finetuned_id: str, alpha: float) -> str:
    """The default name of a WiSE-FT model: ``wiseft:ARCH[zs 1a2b3c4d,ft 5e6f7a8b](alpha=0.5)``,
    the ids being short weights hashes, so sweeps of other checkpoints never share a name."""
    return f"wiseft:{arch}[zs {zeroshot_id[:SHORT_HASH]},ft {finetuned_id[:SHORT_HASH]}](alpha={alpha:g})"


def parse_alphas(text: str) -> list[float]:
    """``0:1:0.1`` (start:stop:step, stop included) or ``0,0.5,1`` -> sorted unique alphas in [0, 1].

    The one parser: ``shiftbench wiseft --alphas`` and ``wiseft_sweep`` read alphas through it."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round((stop - start) / step))
            values = [round(start + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"alphas {text!r}: use START:STOP:STEP (e.g. 0:1:0.1) or a comma list (e.g. 0,0.5,1)") from None
    if not values or any(not 0.0 <= a <= 1.0 for a in values):
        raise ValueError(f"alphas {text!r}: every alpha must be in [0, 1]")
    return sorted(set(values))


@dataclass
class WiseFTEndpoints:
    """Both endpoints loaded once, as canonical image-classifier weights; ``at(alpha)`` builds one."""

    arch: str
    tag: str | None
    mode: str
    zeroshot: dict[str, torch.Tensor]
    finetuned: dict[str, torch.Tensor]
    paths: tuple[Path, Path]
    shas: tuple[str, str]
    head_info: dict
    label_space: str
    name: str | None  # None: the default label, by alpha
    activation: tuple[str, str]  # (quickgelu|gelu, how it is known): the zero-shot model's, for both

    def weights(self, alpha: float) -> dict[str, torch.Tensor]:
        return wiseft_weights(self.zeroshot, self.finetuned, alpha, self.mode, (str(self.paths[0]), str(self.paths[1])))

    def at(self, alpha: float) -> ImageHeadClassifier:
        merged = self.weights(alpha)
        visual, w, b = build_image_classifier(self.arch, merged, self.tag, f"WiSE-FT alpha={alpha}", self.activation[0])
        tags = ["clip", "wise-ft"] + (["patching"] if self.mode == "encoder" else [])
        info = {
            "arch": self.arch, "tags": tags, "alpha": alpha, "mode": self.mode,
            "weights_sha256": state_dict_sha256(merged),  # of the merged tower + head
            "ingredients": [{"role": "zeroshot", "path": str(self.paths[0]), "sha256": self.shas[0]},
                            {"role": "finetuned", "path": str(self.paths[1]), "sha256": self.shas[1]}],
            "head": self.head_info, "pretrained_tag": self.tag, **activation_info(self.activation),
        }
        name = self.name or wiseft_label(self.arch, self.shas[0], self.shas[1], alpha)
        return ImageHeadClassifier(name if self.name is None else f"{self.name}@alpha={alpha:g}", visual, w, b,
                                   preprocess_spec_from_open_clip(visual.preprocess_cfg), self.label_space, info)


def load_endpoints(arg: str, options: dict[str, str]) -> tuple[WiseFTEndpoints, float]:
    """Read and check every option, load both endpoints; returns them and the ``alpha`` option."""
    opts = Options("wiseft", options, WISEFT_OPTIONS)
    arch = resolve_arch(arg, opts)
    alpha = opts.float("alpha", 0.5, lo=0.0, hi=1.0)
    zs_path = opts.path("zeroshot", "zero-shot checkpoint (CLIP weights, or an image classifier with its head)")
    ft_path = opts.path("finetuned", "fine-tuned checkpoint with classification_head.weight/bias")
    mode = opts.choice("mode", MODES, "full")
    tag = opts.get("pretrained")
    activation_opt = opts.get("activation")
    zs = split_classifier_state(load_state_dict(zs_path), str(zs_path))
    ft = split_classifier_state(load_state_dict(ft_path), str(ft_path))
    zs_sha, ft_sha = file_sha256(zs_path), file_sha256(ft_path)
    # A zero-shot endpoint with its own head keeps it, unless mode=encoder is told what text head to build.
    needs_text_head = zs.head_weight is None or mode == "encoder" and bool(opts.given("classnames", "templates"))
    unused = [] if needs_text_head else opts.given(*TEXT_HEAD_OPTIONS)
    if unused:
        given = ", ".join(f"{k}={opts.raw[k]!r}" for k in unused)
        fix = ("or pass mode=encoder to build the zero-shot head from class names and templates" if mode == "full"
               else "or pass classnames= (or templates=) to build the zero-shot head from text")
        raise ValueError(f"model wiseft: option {given}: {zs_path} carries its own head, which mode={mode} "
                         f"{'interpolates' if mode == 'full' else 'keeps frozen'}, so no head is built from text "
                         f"and {'it' if len(unused) == 1 else 'they'} would not be used; drop "
                         f"{', '.join(k + '=' for k in unused)} {fix}")
    ho = head_options(opts) if needs_text_head else None
    name = opts.get("name")
    num_classes = len(ho.names) if ho else int(zs.head_weight.shape[0])
    label_space = label_space_for(opts, num_classes, ho.names_id if ho else None)
    opts.done()
    activation = resolve_activation(arch, tag, zs_path, zs_sha, activation_opt, f"{zs_path} (the zero-shot endpoint)")
    check_same_activation(activation, ft_path, ft_sha, arch)
    if ho is not None:
        model = create_open_clip(arch, tag, activation[0], empty=True)
        load_into(model, fit_clip_state(model, zs.clip), zs_path, f"the CLIP model of open_clip architecture {arch!r}")
        head, scale, head_info = zeroshot_head(model, arch, zs_sha, ho)
        zs.head_weight, zs.head_bias = scale * head, torch.zeros(head.shape[0])
        head_info = {**head_info, "source": "zero-shot text tower"}
        del model
    else:
        head_info = {"source": f"classification_head of {zs_path.name}"}
    if ft.head_weight is None:
        if mode != "encoder":
            raise ValueError(f"{ft_path}: no classification_head.weight; mode=full interpolates heads too "
                             "(use mode=encoder for an encoder-only fine-tune with a frozen zero-shot head)")
        ft.head_weight, ft.head_bias = zs.head_weight, zs.head_bias
    zs_c, ft_c = zs.canonical(), ft.canonical()
    if mode == "encoder":  # frozen per-task head: the zero-shot one on both sides
        ft_c[HEAD_KEYS[0]], ft_c[HEAD_KEYS[1]] = zs_c[HEAD_KEYS[0]], zs_c[HEAD_KEYS[1]]
    ends = WiseFTEndpoints(arch, tag, mode, zs_c, ft_c, (zs_path, ft_path), (zs_sha, ft_sha),
                           {**head_info, "recipe_mode": mode}, label_space, name, activation)
    return ends, alpha


def wiseft(arg: str, **options: str) -> ImageHeadClassifier:
    """``--model wiseft:ARCH`` with ``zeroshot=``, ``finetuned=``, ``alpha=`` (default 0.5)."""
    ends, alpha = load_endpoints(arg, options)
    return ends.at(alpha)


def wiseft_sweep(arg: str, alphas: list[float], **options: str) -> Iterator[ImageHeadClassifier]:
    """One classifier per alpha, loading the two endpoints once."""
    if options.get("alpha"):
        raise ValueError(f"wiseft_sweep: option alpha={options['alpha']} would not be used: the sweep builds the "
                         "alphas it is given; put it in alphas and drop alpha=")
    ends, _ = load_endpoints(arg, options)
    for alpha in alphas:
        yield ends.at(alpha)


def interpolate_logits(zeroshot: Predictions, finetuned: Predictions, alpha: float, model: str | None = None) -> Predictions:
    """Linear-probe WiSE-FT from stored logits: ``(1 - alpha) * z + alpha * f`` per example.

    Exact for heads on a shared frozen encoder (logits are affine in the head's weights);
    examples are matched by key, so the two files may be in different orders.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if zeroshot.shift != finetuned.shift:
        raise ValueError(f"predictions are for different shifts: {zeroshot.shift!r} vs {finetuned.shift!r}")
    if zeroshot.logits.shape[1] != finetuned.logits.shape[1]:
        raise ValueError(f"{zeroshot.model} has {zeroshot.logits.shape[1]} classes, {finetuned.model} "
                         f"{finetuned.logits.shape[1]}: not the same head")
    order = align_keys(zeroshot, finetuned)
    if not np.array_equal(zeroshot.labels, finetuned.labels[order]):
        raise ValueError(f"{zeroshot.model} and {finetuned.model} disagree on labels for the same keys")
    z = zeroshot.logits.astype(np.float32)
    f = finetuned.logits[order].astype(np.float32)
    out = (1.0 - alpha) * z + alpha * f if 0.0 < alpha < 1.0 else (z if alpha == 0.0 else f)
    return Predictions(model or f"{zeroshot.model}+{finetuned.model}@alpha={alpha:.3f}", zeroshot.shift,
                       zeroshot.keys, zeroshot.labels, out.astype(np.float16), dict(zeroshot.meta))
