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
from models.checkpoints import file_sha256, load_into, load_state_dict, parameters_uninitialised
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


def timm_release(sha256: str, arch: str, weights: Any) -> tuple[str, str | None, str | None]:
    """(the name to build, the release's timm name or None, how it was identified).

    Preprocessing comes from the pretrained config of the tag the model is built with, and tags of
    one architecture differ (resnet18's default ``a1_in1k`` crops 0.95 bicubic, its ``tv_in1k``
    0.875 bilinear): weights that are a known release are built with the release's tag, and an
    ``ARCH.TAG`` that names another tag is refused."""
    from models.releases import timm_release_of

    found = timm_release_of(sha256, arch, weights)
    if found is None:
        return arch, None, None
    name, how = found
    import timm as timm_lib

    if name not in timm_lib.list_pretrained(name):  # a release registered at run time, not one of timm's tags
        return arch, name, how
    if "." in arch and arch != name:
        raise ValueError(f"{weights}: these weights are timm's {name} (identified by {how}), but the model names "
                         f"timm:{arch}, whose preprocessing differs; use --model timm:{name} or timm:{name.partition('.')[0]}")
    return name, name, how


def timm(arg: str, **options: str) -> ModuleClassifier:
    import timm as timm_lib
    from timm.data import resolve_model_data_config

    opts = Options("timm", options, TIMM_OPTIONS)
    if not arg:
        raise ValueError("model timm: name the architecture, e.g. --model timm:resnet50 (optionally .TAG)")
    weights = opts.path("weights", "timm checkpoint")
    sha = file_sha256(weights)
    build, release, how = timm_release(sha, arg, weights)
    state = load_state_dict(weights, wrappers=CHECKPOINT_WRAPPERS)
    num_classes = opts.int("num_classes", _head_size(state, ("head.fc.bias", "fc.bias", "head.bias", "classifier.bias",
                                                             "head.l.bias")) or 1000)
    label_space = _label_space(opts, num_classes)
    name = opts.get("name", f"timm:{arg}")
    opts.done()
    try:
        with parameters_uninitialised():  # every parameter is loaded next
            module = timm_lib.create_model(build, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:
        raise ValueError(f"model timm:{arg}: {exc}") from None
    load_into(module, state, weights, f"timm architecture {arg!r} with {num_classes} classes")
    spec = preprocess_from_timm(resolve_model_data_config(module))
    info = {"arch": arg, "weights": str(weights), "weights_sha256": sha, "tags": ["standard"],
            "alpha": None, "ingredients": None, "head": None,
            "pretrained_cfg": getattr(module, "pretrained_cfg", {}).get("tag"),
            "release": None if release is None else {
                "name": release, "identified_by": how,
                "published": release if num_classes == 1000 else None}}  # its figures are for its own 1000-class head
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
    sha = file_sha256(weights)
    spec, recipe, recipe_source, release = torchvision_recipe(arg, opts.get("recipe"), sha, str(weights))
    state = load_state_dict(weights, wrappers=CHECKPOINT_WRAPPERS)
    num_classes = opts.int("num_classes", _head_size(state, ("fc.bias", "classifier.6.bias", "classifier.1.bias",
                                                             "classifier.bias", "heads.head.bias", "head.bias")) or 1000)
    label_space = _label_space(opts, num_classes)
    name = opts.get("name", f"torchvision:{arg}")
    opts.done()
    with parameters_uninitialised():  # every parameter is loaded next
        module = get_model(arg, weights=None, num_classes=num_classes)
    load_into(module, state, weights, f"torchvision architecture {arg!r} with {num_classes} classes")
    info = {"arch": arg, "weights": str(weights), "weights_sha256": sha, "tags": ["standard"],
            "alpha": None, "ingredients": None, "head": None, "preprocess_recipe": recipe,
            "preprocess_recipe_source": recipe_source, "release": torchvision_release_info(release, num_classes)}
    return ModuleClassifier(name, module, num_classes, spec, label_space, info)


def torchvision_recipe(arch: str, recipe: str | None, sha256: str, where: str) -> tuple[PreprocessSpec, str, str, Any]:
    """(eval transform, recipe, how the recipe was chosen, known release or None).

    Weights that are one of torchvision's own releases (by the sha256 prefix in their file
    name) are evaluated with the transform of the recipe they were published with: resnet50's
    IMAGENET1K_V1 weights resize to 256, its V2 weights to 232, and the library's DEFAULT recipe
    is V2, so V1 weights without ``recipe=`` would otherwise be preprocessed for V2. A ``recipe=``
    that contradicts the release is refused."""
    from models.releases import find_torchvision_release

    release = find_torchvision_release(sha256, arch)
    if release is None:
        spec, name = preprocess_from_torchvision(arch, recipe)
        return spec, name, "recipe=" if recipe else "torchvision's DEFAULT weights (unknown weights file)", None
    spec, name = preprocess_from_torchvision(arch, recipe or release.tag)
    if name != release.tag:
        raise ValueError(f"{where}: these are torchvision's {arch} {release.tag} weights (sha256 {sha256[:12]}...), "
                         f"published with that recipe's eval transform, but recipe={recipe} ({name}) was given; "
                         f"drop recipe= or pass recipe={release.tag}")
    return spec, name, f"the known release {release.published} (sha256)", release


def torchvision_release_info(release: Any, num_classes: int) -> dict | None:
    """The release's name and its published ImageNet top-1 (for its own 1000-class head only)."""
    if release is None:
        return None
    comparable = num_classes == 1000
    return {"name": release.published, "identified_by": "sha256", "published": release.published if comparable else None,
            "figures": {"imagenet": release.top1} if comparable and release.top1 is not None else {},
            "figures_source": "torchvision weights meta (acc@1)"}
