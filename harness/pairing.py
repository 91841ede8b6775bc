"""Which ID result an OOD result is plotted against: one rule for the report and the leaderboard.

Every OOD row names its ID setting (``Result.id_setting``): the ID reference scored on the
shift's classes (``imagenet@imagenet-r``), the ID reference itself (``imagenet``) or another
split of the shift (``iwildcam:id_test``). Where a same-class view is named but a source has
only the full ID set (timm and open_clip publish no ImageNet-on-R-classes accuracy for most
models), the full set is the fallback, never preferred.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from harness.api import id_setting_of  # noqa: F401  (re-exported: the spec-side half of the rule)

T = TypeVar("T")


def id_candidates(id_setting: str) -> tuple[str, ...]:
    """ID settings an OOD row may pair with, preferred first: ``imagenet@imagenet-r`` then
    ``imagenet``; any other name only itself."""
    head, at, _ = id_setting.partition("@")
    return (id_setting, head) if at else (id_setting,)


def pair(
    by_setting: Mapping[str, T], id_of: Callable[[str, T], str | None], fallback: bool = True
) -> Iterator[tuple[T, T, bool]]:
    """(OOD row, ID row, preferred) for every row of one model (keyed by setting) that names an
    ID setting the model also has; ``preferred`` marks the pairing the model is scored by.
    ``fallback`` False pairs only with the named setting (the leaderboard requires it)."""
    for setting, row in by_setting.items():
        ref = id_of(setting, row)
        if not ref:
            continue
        cands = id_candidates(ref) if fallback else (ref,)
        found = [by_setting[c] for c in cands if c in by_setting and c != setting]
        for i, id_row in enumerate(found):
            yield row, id_row, i == 0
