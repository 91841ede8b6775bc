"""Model tags for timm models, read from the pretrained tag after the dot in the model name.

The rule (documented in ``docs/report.md``), applied to the ``_``-separated tokens of the tag:

1. No ``in1k`` token: the weights are not an ImageNet-1k classifier as such (e.g. ``fb_dino``)
   -> ``unknown-pretraining``.
2. Any token naming data beyond ImageNet-1k (``in12k``, ``in21k``, ``in22k``, ``laion2b``,
   ``openai``, ``jft``, ``ig1b``, ``m38m``, ``webli``, ``ssld`` (extra unlabelled images), ...)
   or a tag in :data:`MORE_DATA_TAGS` -> ``more-data`` (plus ``clip`` for CLIP-pretrained weights).
3. Any token naming a robustness intervention (adversarial training ``adv``, AdvProp ``ap``,
   AugMix ``am``/``ram``) -> ``robustness-intervention``.
4. Otherwise ``standard``: trained on ImageNet-1k only (self-supervised pre-training on
   ImageNet-1k and distillation from ImageNet-1k teachers included).
"""

from __future__ import annotations

MORE_DATA_TOKENS = frozenset(
    {
        "in12k", "in21k", "in22k", "laion2b", "laiona", "openai", "clip", "m38m", "m30m",
        "ig1b", "yfcc100m", "jft", "webli", "swag", "seer", "ssld", "swsl", "wsl", "ssl",
    }
)
CLIP_TOKENS = frozenset({"clip", "openai", "laion2b", "laiona"})
ROBUSTNESS_TOKENS = frozenset({"adv", "ap", "am", "ram"})

#: Whole tags whose extra data the tokens do not show.
MORE_DATA_TAGS = {
    # BiT distilled from a BiT-M teacher pre-trained on ImageNet-21k.
    "goog_distilled_in1k": "teacher pre-trained on ImageNet-21k",
}


def split_name(model: str) -> tuple[str, str]:
    """``'resnet50.a1_in1k'`` -> ``('resnet50', 'a1_in1k')``; a name without tag gets ``''``."""
    arch, _, tag = model.partition(".")
    return arch, tag


def timm_tags(model: str) -> tuple[str, ...]:
    """Tags of a timm model name by the rule above, sorted."""
    _, tag = split_name(model)
    tokens = set(tag.split("_")) if tag else set()
    if "in1k" not in tokens:
        return ("unknown-pretraining",)
    if tokens & MORE_DATA_TOKENS or tag in MORE_DATA_TAGS:
        return tuple(sorted({"more-data"} | ({"clip"} if tokens & CLIP_TOKENS else set())))
    if tokens & ROBUSTNESS_TOKENS:
        return ("robustness-intervention",)
    return ("standard",)
