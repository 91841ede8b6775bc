"""Standard ImageNet classifiers from local checkpoints: ``timm:ARCH`` and ``torchvision:ARCH``.

These put the user's own models on the testbed trend. The architecture is built without
downloading anything, the weights come from ``weights=PATH`` (safetensors or a state dict,
timm's training checkpoints included), and preprocessing is each library's own eval recipe
for that architecture: timm's pretrained config (input size, crop_pct, interpolation, mean/std;
``ARCH`` may carry a tag such as ``resnet50.a1_in1k``) and torchvision's weights-enum transform
(``recipe=IMAGENET1K_V1``; default: the library's default weights).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.api import PreprocessSpec
from models.checkpoints import file_sha256, load_into, load_state_dict
from models.classifiers import ModuleClassifier
from models.options import Options

TIMM_OPTIONS = ("weights", "num_classes", "label_space", "name")
TORCHVISION_OPTIONS = ("weights", "recipe", "num_classes", "label_space", "name")
# Where timm / DeiT / torchvision reference training scripts keep the weights in a checkpoint.
CHECKPOINT_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")


def preprocess_from_timm(cfg: dict[str, Any]) -> PreprocessSpec:
    """timm ``resolve_model_data_config`` -> PreprocessSpec (as ``transforms_imagenet_eval``)."""
    size = cfg["input_size"][-1]
    if cfg["input_size"][-1] != cfg["input_size"][-2]:
        raise ValueError(f"non-square timm input size {cfg['input_size']} is not supported")
    crop_pct = cfg.get("crop_pct") or 0.875
    mode = cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise ValueError(f"timm crop_mode {mode!r} is not supported (supported: center, squash)")
    return PreprocessSpec(image_size=int(size), resize_size=math.floor(size / crop_pct),
                          resize_mode="shortest" if mode == "center" else "squash", crop="center",
                          interpolation=cfg.get("interpolation") or "bilinear",
                          mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]))


def _head_size(state: dict[str, torch.Tensor], candidates: tuple[str, ...]) -> int | None:
    for key in candidates:
        if key in state and state[key].ndim == 1:
            return int(state[key].shape[0])
    return None


def _label_space(opts: Options, num_classes: int) -> str:
    space = opts.get("label_space", "imagenet-1k" if num_classes == 1000 else None)
    if space is None:
        raise ValueError(f"model {opts.factory}: a {num_classes}-class model needs label_space=NAME")
    return space


def timm(arg: str, **options: str) -> ModuleClassifier:
    import timm as timm_lib
    from timm.data import resolve_model_data_config

    opts = Options("timm", options, TIMM_OPTIONS)
    if not arg:
        raise ValueError("model timm: name the architecture, e.g. --model timm:resnet50 (optionally .TAG)")
    weights = opts.path("weights", "timm checkpoint")
    state = load_state_dict(weights, wrappers=CHECKPOINT_WRAPPERS)
    num_classes = opts.int("num_classes", _head_size(state, ("head.fc.bias", "fc.bias", "head.bias", "classifier.bias",
                                                             "head.l.bias")) or 1000)
    label_space = _label_space(opts, num_classes)
    name = opts.get("name", f"timm:{arg}")
    opts.done()
    try:
        module = timm_lib.create_model(arg, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:
        raise ValueError(f"model timm:{arg}: {exc}") from None
    load_into(module, state, weights, f"timm architecture {arg!r} with {num_classes} classes")
    spec = preprocess_from_timm(resolve_model_data_config(module))
    info = {"arch": arg, "weights": str(weights), "weights_sha256": file_sha256(weights), "tags": ["standard"],
            "alpha": None, "ingredients": None, "head": None,
            "pretrained_cfg": getattr(module, "pretrained_cfg", {}).get("tag")}
    return ModuleClassifier(name, module, num_classes, spec, label_space, info)


def preprocess_from_torchvision(arch: str, recipe: str | None) -> tuple[PreprocessSpec, str]:
    """The eval transform of torchvision's weights enum for ``arch`` (default: its DEFAULT weights)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision has no weights recipes for {arch!r}; pass a known architecture") from None
    if recipe is None:
        chosen = enum.DEFAULT
    else:
        try:
            chosen = enum[recipe]
        except KeyError:
            raise ValueError(f"torchvision {arch}: unknown recipe {recipe!r}; known: {', '.join(w.name for w in enum)}") from None
    t = chosen.transforms()
    size = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    spec = PreprocessSpec(image_size=int(size), resize_size=int(resize), interpolation=t.interpolation.value,
                          mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std))
    return spec, chosen.name


def torchvision(arg: str, **options: str) -> ModuleClassifier:
    from torchvision.models import get_model, list_models

    opts = Options("torchvision", options, TORCHVISION_OPTIONS)
    if arg not in list_models():
        import difflib

        close = difflib.get_close_matches(arg, list_models(), n=3)
        raise ValueError(f"unknown torchvision architecture {arg!r}." + (f" Did you mean: {', '.join(close)}?" if close else ""))
    weights = opts.path("weights", "torchvision state dict")
    spec, recipe = preprocess_from_torchvision(arg, opts.get("recipe"))
    state = load_state_dict(weights, wrappers=CHECKPOINT_WRAPPERS)
    num_classes = opts.int("num_classes", _head_size(state, ("fc.bias", "classifier.6.bias", "classifier.1.bias",
                                                             "classifier.bias", "heads.head.bias", "head.bias")) or 1000)
    label_space = _label_space(opts, num_classes)
    name = opts.get("name", f"torchvision:{arg}")
    opts.done()
    module = get_model(arg, weights=None, num_classes=num_classes)
    load_into(module, state, weights, f"torchvision architecture {arg!r} with {num_classes} classes")
    info = {"arch": arg, "weights": str(weights), "weights_sha256": file_sha256(weights), "tags": ["standard"],
            "alpha": None, "ingredients": None, "head": None, "preprocess_recipe": recipe}
    return ModuleClassifier(name, module, num_classes, spec, label_space, info)
