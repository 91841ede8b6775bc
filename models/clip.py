"""CLIP models from local files: zero-shot (``clip``) and fine-tuned image classifiers (``finetuned``).

Any open_clip architecture (built-in name, or ``config=model.json`` for a custom one), weights
from a local file (open_clip / OpenAI-style state dicts, WiSE-FT and model-soups state dicts,
safetensors) or from the local Hugging Face cache (``pretrained=TAG``), fully offline.
Preprocessing is resolved from the model (and the pretrained tag when given) and recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.api import PreprocessSpec
from models.checkpoints import file_sha256, load_into, load_state_dict, parameters_uninitialised
from models.classifiers import ImageHeadClassifier
from models.options import Options

# Where the CLIP weights sit inside image-classifier checkpoints, most specific first:
# WiSE-FT ``ImageClassifier`` (image_encoder.model.*), model soups (model.*), plain open_clip.
CLIP_PREFIXES = ("image_encoder.model.", "image_encoder.", "model.", "")
HEAD_KEYS = ("classification_head.weight", "classification_head.bias")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def preprocess_spec_from_open_clip(cfg: dict[str, Any]) -> PreprocessSpec:
    """open_clip's ``preprocess_cfg`` -> our PreprocessSpec (same geometry as its eval transform)."""
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square open_clip input size {size} is not supported")
        size = size[0]
    mode = cfg.get("resize_mode", "shortest")
    if mode == "shortest":
        resize_mode, crop = "shortest", "center"
    elif mode == "squash":
        resize_mode, crop = "squash", "none"
    else:
        raise ValueError(f"open_clip resize_mode {mode!r} is not supported (supported: shortest, squash)")
    return PreprocessSpec(image_size=int(size), resize_size=int(size), resize_mode=resize_mode, crop=crop,
                          interpolation=cfg.get("interpolation", "bicubic"),
                          mean=tuple(float(v) for v in cfg.get("mean")), std=tuple(float(v) for v in cfg.get("std")))


def register_config(path: Path) -> str:
    """Make a model-config JSON (open_clip's format) known to open_clip; returns its name (the stem)."""
    import open_clip

    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable open_clip model config ({exc})") from exc
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg.get("model_cfg", cfg)):
        raise ValueError(f"{path}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
    builtin = Path(open_clip.__file__).parent / "model_configs" / path.name
    if builtin.is_file():
        own = json.loads(builtin.read_text())
        if cfg.get("model_cfg", cfg) != own.get("model_cfg", own):
            raise ValueError(f"{path}: its file name registers the architecture {path.stem!r}, open_clip's own "
                             f"{path.stem}, with another config: every later model of {path.stem} in this process "
                             "would be built from it; rename the file (its stem names the architecture)")
    open_clip.add_model_config(path)
    return path.stem


def check_arch(arch: str) -> None:
    import open_clip

    if open_clip.get_model_config(arch) is None:
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown open_clip architecture {arch!r}.{hint} Pass config=model.json for a custom one")


def create_open_clip(arch: str, pretrained_tag: str | None = None, activation: str | None = None, empty: bool = False):
    """A randomly initialised open_clip model of ``arch`` with its preprocessing config (no download).

    ``activation`` (``quickgelu``/``gelu``, from ``resolve_activation``) decides the towers'
    activation; None builds what the architecture and tag say. ``empty``: parameters are left
    uninitialised, for a caller that loads every one of them next (``load_into``); in a checked
    build (``harness.api.checking_build``) they are on the ``meta`` device."""
    import open_clip

    from harness.api import is_checking_build

    check_arch(arch)
    force = None
    if pretrained_tag:
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained_tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ValueError(f"open_clip has no pretrained tag {pretrained_tag!r} for {arch}; known: {', '.join(tags) or 'none'}")
        force = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
    if activation is None:
        from models.releases import activation_of

        activation = activation_of(arch, pretrained_tag)
    import logging

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # silence "initialized randomly": weights come next
    try:
        with parameters_uninitialised() if empty else contextlib.nullcontext():
            model = open_clip.create_model(arch, pretrained=None, force_preprocess_cfg=force,
                                           force_quick_gelu=activation == "quickgelu",
                                           device="meta" if empty and is_checking_build() else "cpu")
    finally:
        logging.getLogger().setLevel(level)
    return model.eval()


ACTIVATIONS = ("quickgelu", "gelu")


def activation_evidence(arch: str, tag: str | None, weights: str | Path | None,
                        sha256: str | None, include_arch: bool = True) -> list[tuple[str, str]]:
    """Everything that says which activation the weights were trained with: (activation, how known)."""
    import open_clip

    from models.releases import activation_of, find_release
    from models.torchscript import archive_uses_quick_gelu, is_torchscript_archive

    found = []
    cfg = open_clip.get_model_config(arch) or {}
    if include_arch and "quick_gelu" in cfg:
        found.append(("quickgelu" if cfg["quick_gelu"] else "gelu", f"the architecture {arch}"))
    if tag:
        found.append((activation_of(arch, tag), f"pretrained={tag}"))
    if weights is not None and is_torchscript_archive(weights):
        found.append(("quickgelu" if archive_uses_quick_gelu(weights) else "gelu",
                      f"the TorchScript archive {Path(weights).name}"))
    release = find_release(sha256, arch) if sha256 else None
    if release is not None and release.activation in ACTIVATIONS:
        found.append((release.activation, f"the known release {release.published} (sha256 {sha256[:12]})"))
    return found


def resolve_activation(arch: str, tag: str | None, weights: str | Path | None, sha256: str | None,
                       option: str | None, what: str) -> tuple[str, str]:
    """The activation to build ``arch`` with and how it is known, or a ValueError.

    OpenAI's CLIP and every fine-tune of it (WiSE-FT, model soups) were trained with QuickGELU;
    open_clip's plain configs (``ViT-B-32``) use GELU, and loading one into the other runs
    without error while costing accuracy. So the activation must come from the archive, an
    explicit architecture (``-quickgelu``, or a config that sets ``quick_gelu``), the pretrained
    tag, a known release's hash, or ``activation=``; sources that disagree are refused."""
    check_arch(arch)
    if option is not None and option not in ACTIVATIONS:
        raise ValueError(f"{what}: activation={option!r}: expected one of {', '.join(ACTIVATIONS)}")
    found = activation_evidence(arch, tag, weights, sha256)
    if option is not None:
        found.append((option, f"activation={option}"))
    values = {a for a, _ in found}
    if len(values) > 1:
        said = "; ".join(f"{how} says {a}" for a, how in found)
        raise ValueError(f"{what}: the activation is contradictory ({said}). Building with the wrong one runs but "
                         "silently loses accuracy; OpenAI's CLIP and its fine-tunes use QuickGELU (architecture "
                         f"{arch.removesuffix('-quickgelu')}-quickgelu), most LAION releases GELU. Fix the one that is wrong")
    if not found:
        raise ValueError(
            f"{what}: cannot tell whether these weights were trained with QuickGELU (OpenAI's CLIP and every fine-tune "
            "of it: WiSE-FT, model soups) or GELU (most open_clip LAION/DataComp releases); open_clip's "
            f"{arch} builds GELU, and the wrong one runs but silently loses accuracy. Pass --model-arg "
            f"activation=quickgelu or --model-arg activation=gelu (or use the architecture {arch}-quickgelu, or "
            "pretrained=TAG)")
    return found[0][0], found[0][1]


def check_same_activation(activation: tuple[str, str], weights: str | Path, sha256: str | None, arch: str) -> None:
    """Refuse an endpoint or ingredient whose own file says another activation than the
    zero-shot model's: weight-space merges need one architecture, activation included."""
    for value, how in activation_evidence(arch, None, weights, sha256, include_arch=False):
        if value != activation[0]:
            raise ValueError(f"{weights}: {how} says {value}, but the zero-shot model is {activation[0]} "
                             f"({activation[1]}); weights trained with different activations cannot be merged")


def activation_info(activation: tuple[str, str]) -> dict[str, str]:
    return {"activation": activation[0], "activation_source": activation[1]}


def hf_cached_weights(arch: str, tag: str) -> Path:
    """The open_clip weights file for ``arch``/``tag`` in the local Hugging Face cache (no network)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch}; known: {', '.join(tags) or 'none'}")
    from models.weights import cached_url_weights, hf_cached, open_clip_hub_files

    fetched = cached_url_weights(arch, tag)  # an OpenAI archive from `shiftbench fetch-weights`
    if fetched is not None:
        return fetched
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise FileNotFoundError(f"{arch}/{tag} is not distributed through the Hugging Face hub; "
                                f"run `shiftbench fetch-weights clip:{arch}@{tag}` or pass weights=PATH")
    repo, names = open_clip_hub_files(hub)
    hit = hf_cached(repo, names)
    if hit is not None:
        return hit
    cache = os.environ.get("HF_HUB_CACHE") or None
    raise FileNotFoundError(
        f"{arch}/{tag}: {repo}/{names[0]} is not in the local Hugging Face cache "
        f"({cache or 'default HF_HUB_CACHE'}); download it once (shiftbench fetch-weights clip:{arch}@{tag}) or pass weights=PATH")


def fit_clip_state(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Small format differences between CLIP state dicts and the open_clip module."""
    state = dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and isinstance(target, torch.Tensor) and state[key].ndim != target.ndim:
            state[key] = state[key].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    return state


@dataclass
class ClassifierState:
    """A checkpoint split into CLIP weights (open_clip names) and an optional linear head."""

    clip: dict[str, torch.Tensor]
    head_weight: torch.Tensor | None
    head_bias: torch.Tensor | None

    def visual(self) -> dict[str, torch.Tensor]:
        return {k[len("visual."):]: v for k, v in self.clip.items() if k.startswith("visual.")}

    def canonical(self) -> dict[str, torch.Tensor]:
        """Image tower + head under fixed names: what WiSE-FT and soups interpolate for a classifier."""
        if self.head_weight is None:
            raise ValueError("no classification head")
        bias = self.head_bias if self.head_bias is not None else torch.zeros(self.head_weight.shape[0])
        out = {k: v for k, v in self.clip.items() if k.startswith("visual.")}
        out[HEAD_KEYS[0]], out[HEAD_KEYS[1]] = self.head_weight, bias
        return out


def split_classifier_state(state: dict[str, torch.Tensor], source: str) -> ClassifierState:
    """Find the CLIP weights under WiSE-FT / model-soups / plain prefixes, and the head."""
    for prefix in CLIP_PREFIXES:
        if any(k.startswith(prefix + "visual.") for k in state):
            clip = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k not in HEAD_KEYS}
            return ClassifierState(clip, state.get(HEAD_KEYS[0]), state.get(HEAD_KEYS[1]))
    sample = ", ".join(sorted(state)[:4])
    raise ValueError(f"{source}: no CLIP image tower found (expected keys like visual.*, model.visual.* or "
                     f"image_encoder.model.visual.*; found {sample} ...); is this a CLIP checkpoint?")


def resolve_arch(arg: str, opts: Options) -> str:
    """The architecture: ARG, or the one ``config=`` registers under its file's stem. An ARG
    naming another architecture than the config would be dropped while still naming the
    model in results (``NAME:ARG``), so it is refused."""
    config = opts.path("config", "open_clip model config JSON", required=False)
    if config is not None and arg and arg != config.stem:
        raise ValueError(f"model {opts.factory}:{arg}: option config={config} registers the architecture "
                         f"{config.stem!r} (its file name), so {arg!r} would not be built; name the model "
                         f"{opts.factory}:{config.stem}, or drop config= to build {arg}")
    arch = register_config(config) if config is not None else arg
    if not arch:
        raise ValueError(f"model {opts.factory}: name the open_clip architecture, e.g. --model {opts.factory}:ViT-B-32")
    return arch


def clip_weights(arch: str, opts: Options) -> tuple[Path, str | None]:
    weights = opts.path("weights", "CLIP checkpoint", required=False)
    tag = opts.get("pretrained")
    if weights is None and tag is None:
        raise ValueError(f"model {opts.factory}:{arch}: pass weights=PATH (a checkpoint file) or pretrained=TAG "
                         "(open_clip weights already in the local Hugging Face cache)")
    return (weights if weights is not None else hf_cached_weights(arch, tag)), tag


@dataclass
class HeadOptions:
    """What a zero-shot head is built from (read before any heavy work, so typos fail fast)."""

    names_id: str
    names: list[str]
    templates_id: str
    templates: list[str]
    scale: float | None  # None: the model's learned exp(logit_scale), as WiSE-FT bakes into its heads
    bf16: bool
    cache: bool


#: What only a head built from a CLIP text tower reads (``head_options``).
TEXT_HEAD_OPTIONS = ("classnames", "templates", "scale", "head_bf16", "cache")


def head_options(opts: Options) -> HeadOptions:
    from models.prompts import load_classnames, load_templates

    names_id, names = load_classnames(opts.get("classnames", "imagenet-1k"))
    templates_id, templates = load_templates(opts.get("templates", "openai-imagenet-80"))
    scale = None if opts.get("scale", "model") == "model" else opts.float("scale", 100.0, lo=0.0)
    return HeadOptions(names_id, names, templates_id, templates, scale,
                       opts.bool("head_bf16", False), opts.bool("cache", True))


def zeroshot_head(model, arch: str, weights_sha: str, ho: HeadOptions) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Unit-norm class embeddings ``[C, D]``, the logit scale and the head's provenance. A checked
    build (``harness.api.checking_build``) encodes no prompt and writes no cached head: its head
    has the real shape and no values."""
    import open_clip

    from harness.api import is_checking_build
    from models.zeroshot import cached_zeroshot_head, can_truncate

    if is_checking_build():
        width = int(open_clip.get_model_config(arch)["embed_dim"])
        return torch.zeros(len(ho.names), width), 1.0 if ho.scale is None else ho.scale, {"cache": "checked only"}

    scale = ho.scale if ho.scale is not None else float(model.logit_scale.detach().float().exp().reshape(-1)[0])
    head, info = cached_zeroshot_head(model, open_clip.get_tokenizer(arch), ho.names, ho.templates,
                                      weights_id=weights_sha, arch=arch, bf16=ho.bf16, use_cache=ho.cache)
    info.update(classnames=ho.names_id, templates=ho.templates_id, scale=scale,
                scale_source="model" if ho.scale is None else "fixed", truncated_context=can_truncate(model))
    return head, scale, info


def label_space_for(opts: Options, num_classes: int, names_id: str | None = None) -> str:
    """The ``label_space`` option, else ImageNet's for a 1000-class head that is not a zero-shot
    head of other class names (``names_id``: ``HeadOptions.names_id`` of a text head)."""
    default = "imagenet-1k" if num_classes == 1000 and names_id in (None, "imagenet-1k") else None
    space = opts.get("label_space", default)
    if space is None:
        raise ValueError(f"model {opts.factory}: a {num_classes}-class head needs label_space=NAME "
                         "(the label space of the shifts it is evaluated on)")
    return space


CLIP_OPTIONS = ("weights", "pretrained", "config", "activation", *TEXT_HEAD_OPTIONS, "label_space", "name")


def release_info(sha256: str, arch: str, tag: str | None, head: tuple[str, str] | None) -> dict[str, Any] | None:
    """The known release these weights are, and whether its published figures apply.

    ``tag``: the pretrained tag the weights file was taken for (from the local Hugging Face
    cache), not one given only for preprocessing next to ``weights=``.
    Published zero-shot figures were measured with one head (class names, templates); with
    another, the release is still recorded but not compared (``published`` is None)."""
    from models.releases import find_release, tagged_release

    release = find_release(sha256, arch)
    how = "sha256"
    if release is None and tag:
        release, how = tagged_release(arch, tag), f"pretrained={tag}"
    if release is None:
        return None
    comparable = head is not None and tuple(head) == tuple(release.head)
    return {"name": release.published, "identified_by": how, "activation": release.activation,
            "published": release.published if comparable else None,
            "published_head": list(release.head)}


def clip(arg: str, **options: str) -> ImageHeadClassifier:
    """``--model clip:ARCH``: zero-shot CLIP classifier from class names and templates."""
    opts = Options("clip", options, CLIP_OPTIONS)
    arch = resolve_arch(arg, opts)
    weights, tag = clip_weights(arch, opts)
    ho = head_options(opts)
    label_space = label_space_for(opts, len(ho.names), ho.names_id)
    name = opts.get("name", f"clip:{arch}")
    activation_opt = opts.get("activation")
    from_tag = opts.get("weights") is None
    opts.done()
    sha = file_sha256(weights)
    activation = resolve_activation(arch, tag, weights, sha, activation_opt, f"{weights}")
    model = create_open_clip(arch, tag, activation[0], empty=True)
    state = split_classifier_state(load_state_dict(weights), str(weights))
    load_into(model, fit_clip_state(model, state.clip), weights, f"the CLIP model of open_clip architecture {arch!r}")
    head, scale, head_info = zeroshot_head(model, arch, sha, ho)
    info = {"arch": arch, "weights": str(weights), "weights_sha256": sha, "pretrained_tag": tag,
            "tags": ["clip", "zero-shot"], "alpha": None, "ingredients": None, "head": head_info,
            **activation_info(activation),
            "release": release_info(sha, arch, tag if from_tag else None, (ho.names_id, ho.templates_id))}
    return ImageHeadClassifier(name, model.visual, scale * head, None,
                               preprocess_spec_from_open_clip(model.visual.preprocess_cfg), label_space, info)


FINETUNED_OPTIONS = ("weights", "pretrained", "config", "activation", "label_space", "name")


def build_image_classifier(arch: str, canonical: dict[str, torch.Tensor], tag: str | None, source: str,
                           activation: str | None = None):
    """Image tower + head from canonical weights (``visual.*``, ``classification_head.*``)."""
    model = create_open_clip(arch, tag, activation, empty=True)  # only the image tower is loaded and used
    visual = {k[len("visual."):]: v for k, v in canonical.items() if k.startswith("visual.")}
    load_into(model.visual, visual, source, f"the image tower of open_clip architecture {arch!r}")
    return model.visual, canonical[HEAD_KEYS[0]], canonical[HEAD_KEYS[1]]


def finetuned(arg: str, **options: str) -> ImageHeadClassifier:
    """``--model finetuned:ARCH``: a fine-tuned CLIP image encoder with its linear head."""
    opts = Options("finetuned", options, FINETUNED_OPTIONS)
    arch = resolve_arch(arg, opts)
    weights = opts.path("weights", "fine-tuned checkpoint with classification_head.weight/bias")
    tag = opts.get("pretrained")
    activation_opt = opts.get("activation")
    state = split_classifier_state(load_state_dict(weights), str(weights))
    if state.head_weight is None:
        raise ValueError(f"{weights}: no classification_head.weight; for a CLIP checkpoint without a head use "
                         f"--model clip:{arch} (zero-shot)")
    sha = file_sha256(weights)
    activation = resolve_activation(arch, tag, weights, sha, activation_opt, f"{weights}")
    visual, w, b = build_image_classifier(arch, state.canonical(), tag, str(weights), activation[0])
    label_space = label_space_for(opts, w.shape[0])
    name = opts.get("name", f"finetuned:{arch}")
    opts.done()
    info = {"arch": arch, "weights": str(weights), "weights_sha256": sha, "pretrained_tag": tag,
            **activation_info(activation), "release": release_info(sha, arch, None, None),
            "tags": ["clip", "fine-tuned"], "alpha": None, "ingredients": None,
            "head": {"recipe": "linear head from checkpoint on L2-normalised image features"}}
    return ImageHeadClassifier(name, visual, w, b, preprocess_spec_from_open_clip(visual.preprocess_cfg),
                               label_space, info)
