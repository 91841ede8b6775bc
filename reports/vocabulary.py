"""The report's setting vocabulary: the engine's names, and what is known about the settings that
published tables hold.

A setting is named as the engine's ``results.jsonl`` names it (``harness.api.Result.setting``):
``imagenetv2`` is ImageNetV2 matched-frequency, ``objectnet`` is ObjectNet through the 1000-way
ImageNet head, ``objectnet-names`` ObjectNet through a 113-way head built from its class names,
``imagenet@imagenet-r`` ImageNet val on ImageNet-R's classes (``harness.api.id_view_setting``).
Importers translate foreign tables into these names; nothing here renames an engine row.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.api import id_view_setting

ID_SETTING = "imagenet"

#: The published tables' OOD settings, in page order, with the ID view on the same classes (if
#: any). Page order only: rows of any other setting are placed by the ID setting they name.
SHIFTS: dict[str, str | None] = {
    "imagenetv2": None,
    "imagenet-sketch": None,
    "imagenet-r": id_view_setting(ID_SETTING, "imagenet-r"),
    "imagenet-a": id_view_setting(ID_SETTING, "imagenet-a"),
    "objectnet": id_view_setting(ID_SETTING, "objectnet"),
    # a 113-way head cannot score ImageNet: its ID accuracy is the same weights' 1000-way head's
    "objectnet-names": None,
}

#: The ID setting each known OOD setting pairs with, for rows that name none (foreign tables
#: carry no such field; the engine's ``objectnet-names`` spec has no ID reference of its own).
KNOWN_ID_SETTINGS: dict[str, str] = {s: v or ID_SETTING for s, v in SHIFTS.items()}

#: The shifts the average-over-shifts figure averages, as the WiSE-FT and model-soups papers do.
AVERAGE_SHIFTS: tuple[str, ...] = ("imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")
#: A setting that measures one of ``AVERAGE_SHIFTS`` under another protocol, and stands for it in
#: the average where a model has no figure of its own on it (open_clip's ObjectNet is names-head).
STANDS_FOR: dict[str, str] = {"objectnet-names": "objectnet"}

#: Test-set sizes (examples scored) used for Clopper-Pearson intervals when a source gives none.
#: ID views: 50 val images per ImageNet class in the subset (200 for R/A, 125 ids for ObjectNet).
DEFAULT_SIZES: dict[str, int] = {
    "imagenet": 50_000,
    "imagenetv2": 10_000,
    "imagenet-sketch": 50_889,
    "imagenet-r": 30_000,
    "imagenet-a": 7_500,
    "objectnet": 18_574,
    "objectnet-names": 18_574,
    "imagenet@imagenet-r": 10_000,
    "imagenet@imagenet-a": 10_000,
    "imagenet@objectnet": 6_250,
}

#: Protocol tags that make two evaluations of one setting incomparable; rows whose values for
#: these keys differ are never put in one fit or table. Missing keys read as the default here.
#: Vocabulary shared with the engine's ``Result.protocol``: ``head`` (``imagenet-1k``: the
#: 1000-way ImageNet head; ``objectnet-113-names``: a 113-way zero-shot head from ObjectNet's
#: class names), ``projection`` (``max`` over each ObjectNet class's ImageNet ids), ``crop``
#: (``border-2px`` as imagenet-testbed does; WiSE-FT, model soups and CLIP_benchmark crop nothing),
#: ``version`` (ObjectNet ``1.0`` or ``1.0-beta``), ``format`` (ImageNetV2 ``format-val`` re-encoding).
PROTOCOL_KEYS: dict[str, dict[str, str]] = {
    "imagenetv2": {"format": "original"},
    "objectnet": {"version": "1.0", "head": "imagenet-1k", "projection": "max", "crop": "none"},
    "objectnet-names": {"version": "1.0", "head": "objectnet-113-names", "projection": "none", "crop": "none"},
    "imagenet@objectnet": {"head": "imagenet-1k", "projection": "max"},
}

#: Protocol entries that separate rows of any setting wherever a row has them: which split was
#: scored and how, and a decoder other than PIL's (the engine adds ``decoder`` to such rows).
SPLIT_KEYS = ("split", "split_scheme", "decoder")

#: Settings whose ``version`` protocol entry defaults to the row's ``shift_version``.
VERSIONED = ("objectnet", "objectnet-names")

#: Names older shiftbench tables used for the engine's settings (read as legacy tables only).
LEGACY_NAMES = {"imagenetv2-matched-frequency": "imagenetv2"}
#: The protocol ``head`` that made an old table's ``objectnet`` row the engine's ``objectnet-names``.
NAMES_HEAD = "objectnet-113-names"


def shift_of(setting: str) -> str:
    """The shift a setting's predictions come from, as the engine records it: ``imagenet`` for
    ``imagenet@imagenet-r``, the setting itself otherwise (``iwildcam:id_test`` is a shift)."""
    return setting.partition("@")[0]


def protocol_key(setting: str, protocol: Mapping[str, str], shift_version: str = "") -> tuple[tuple[str, str], ...]:
    """The comparability key: the values of this setting's protocol keys (defaults filled in),
    and the split, split scheme and decoder wherever a row names them (a ``--split train`` row
    is never fitted with the official test's, nor an nvjpeg-decoded row with PIL's)."""
    proto = dict(protocol)
    if shift_of(setting) in VERSIONED and shift_version:
        proto.setdefault("version", shift_version)
    defaults = {**{k: "" for k in SPLIT_KEYS}, **PROTOCOL_KEYS.get(setting, {})}
    return tuple((k, proto.get(k, v)) for k, v in sorted(defaults.items()) if proto.get(k, v))


def legacy_setting(setting: str, protocol: Mapping[str, str]) -> str:
    """The engine's name for a setting an older shiftbench table wrote under the published
    tables' name: ``imagenetv2-matched-frequency`` is ``imagenetv2``, and ``objectnet`` scored by
    a 113-way names head is ``objectnet-names``; every other name is kept."""
    if setting == "objectnet" and protocol.get("head") == NAMES_HEAD:
        return "objectnet-names"
    head, at, tail = setting.partition("@")
    return LEGACY_NAMES.get(head, head) + (at + LEGACY_NAMES.get(tail, tail) if at else "")
