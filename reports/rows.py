"""How the report reads and writes ``harness.api.Result`` rows beyond their fields: the input a
row came from, its model's tags, and the builder importers use for rows of foreign tables.

The engine writes each model's tags under ``provenance["model"]["tags"]``; an importer puts a
foreign table's tags there too, and the input's name (``timm``, ``run:b32``) under
``provenance["results_source"]`` (not ``source``: the engine uses that for where a cell's
images came from, ``cache`` or ``decode``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from harness.api import Result
from reports.vocabulary import DEFAULT_SIZES, KNOWN_ID_SETTINGS, shift_of

SOURCE = "results_source"

#: Tags of engine rows whose known release was checked against its published figure.
PUBLISHED_TAGS = {"reproduces": "reproduces-published", "differs": "differs-from-published"}


def source_of(res: Result) -> str:
    """The input a row was read from (empty when it was built without one)."""
    return str((res.provenance or {}).get(SOURCE) or "")


def model_tags(res: Result) -> tuple[str, ...]:
    """The tags as written: ``provenance["model"]["tags"]``."""
    return tuple(((res.provenance or {}).get("model") or {}).get("tags") or ())


def report_tags(res: Result) -> tuple[str, ...]:
    """The tags the report's baseline rules and highlights read: the model's own, plus what they
    imply. A CLIP model tagged ``zero-shot`` is also ``clip-zero-shot``; the models' ``wise-ft``
    is also ``wiseft`` (the tag WiSE-FT's own result files get); a known release checked
    against its published figure gets ``reproduces-published`` or ``differs-from-published``."""
    tags = set(model_tags(res))
    if {"clip", "zero-shot"} <= tags:
        tags.add("clip-zero-shot")
    if "wise-ft" in tags:
        tags.add("wiseft")
    verdict = ((res.provenance or {}).get("published_check") or {}).get("verdict")
    if verdict in PUBLISHED_TAGS:
        tags.add(PUBLISHED_TAGS[verdict])
    return tuple(sorted(tags))


def with_source(res: Result, source: str) -> Result:
    """``res`` read from input ``source``."""
    return dataclasses.replace(res, provenance={**(res.provenance or {}), SOURCE: source})


def with_model_tags(res: Result, tags: Iterable[str]) -> Result:
    """``res`` with its model's tags replaced (the rest of the model's provenance kept)."""
    prov = dict(res.provenance or {})
    prov["model"] = {**(prov.get("model") or {}), "tags": list(tags)}
    return dataclasses.replace(res, provenance=prov)


def published_result(
    source: str,
    model: str,
    setting: str,
    metrics: Mapping[str, float],
    n: int | None = None,
    protocol: Mapping[str, str] | None = None,
    tags: Iterable[str] = (),
    where: str = "",
    id_setting: str | None = None,
    main_metric: str = "top1",
    n_expected: int | None = None,
    shift_version: str = "",
) -> Result:
    """A row of a foreign table as a ``Result``, refusing figures outside [0, 1] (percent must be
    converted first). ``n`` None takes the setting's published size; ``n_expected`` None is
    ``n`` (a published figure covers its whole test set); 0 means unknown. ``id_setting`` None
    takes the known pairing of the setting, if it has one."""
    clean = {}
    for name, value in metrics.items():
        v = float(value)
        if not 0.0 <= v <= 1.0:
            raise ValueError(
                f"{where or source}: {name} {value!r} for {model!r} on {setting!r} is not a fraction in [0, 1]; "
                "if the file holds percent, pass the matching --format so it is converted"
            )
        clean[str(name)] = v
    if main_metric not in clean:
        raise ValueError(f"{where or source}: {model!r} on {setting!r} has no {main_metric!r} figure (its main metric)")
    size = int(n) if n else DEFAULT_SIZES.get(setting, 0)
    proto = {str(k): str(v) for k, v in sorted((protocol or {}).items())}
    return Result(
        model=model,
        setting=setting,
        shift=shift_of(setting),
        shift_version=shift_version or proto.get("version", ""),
        n=size,
        n_expected=size if n_expected is None else int(n_expected),
        metrics=clean,
        protocol=proto,
        provenance={SOURCE: source, "model": {"name": model, "tags": sorted(set(tags))}},
        id_setting=id_setting or KNOWN_ID_SETTINGS.get(setting),
        main_metric=main_metric,
    )
