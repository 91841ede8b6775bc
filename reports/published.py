"""After every cell: does a known release reproduce its published accuracy?

A model whose weights are a known release (``models.releases``; its ``describe()`` names the
published model under ``release.published``) is compared, setting by setting, with the figure
the release publishes itself (torchvision's weights meta: ``release.figures``) or else that
model's figure in the bundled testbed, on the same protocol. Wrong preprocessing, activation,
class order or data then shows on the first run, not in a reviewer's reply.

The tolerance is ``Z`` binomial standard errors of the difference of the two accuracies (each
with its own number of images, taken as independent: conservative, since both were measured on
the same images) plus ``MARGIN`` for protocol details publishers do not pin (resize library,
JPEG decoder, fp16 text tower). On ImageNet (50,000 images, ~63% top-1) that is about
1.1 points; on ImageNet-A (7,500, ~32%) about 2.3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.api import Result

Z = 2.576  # two-sided 99%
MARGIN = 0.003  # 0.3 points of top-1 for unpinned protocol details
METRIC = "top1"


def tolerance(expected: float, n_expected: int, got: float, n_got: int) -> float:
    """How far ``got`` may be from ``expected`` and still reproduce it."""
    var = expected * (1 - expected) / max(n_expected, 1) + got * (1 - got) / max(n_got, 1)
    return Z * math.sqrt(var) + MARGIN


def published_rows() -> list[Result]:
    """The published figures compared against: the bundled testbed."""
    from reports.testbed import load_testbed

    return load_testbed()


def published_figure(name: str, row: Result) -> Result | None:
    """The testbed's row of model ``name`` with a top-1 figure for ``row``'s setting on the same
    protocol, if any (both under the engine's setting names)."""
    from reports.vocabulary import protocol_key

    key = protocol_key(row.setting, row.protocol, row.shift_version)
    for published in published_rows():
        if (published.model == name and published.setting == row.setting and METRIC in published.metrics
                and protocol_key(published.setting, published.protocol, published.shift_version) == key):
            return published
    return None


def release_figure(release: Mapping[str, Any], row: Result) -> float | None:
    """The top-1 a release publishes itself for ``row``'s setting (torchvision's weights meta),
    on the setting's standard protocol only (a row scored otherwise, e.g. another split or
    decoder, has nothing to compare with there)."""
    from reports.vocabulary import protocol_key

    value = (release.get("figures") or {}).get(row.setting)
    if value is None or protocol_key(row.setting, row.protocol, row.shift_version) != protocol_key(row.setting, {}, row.shift_version):
        return None
    return float(value)


def published_check(model: Mapping[str, Any], row: Result) -> dict[str, Any] | None:
    """``{expected, got, verdict, ...}`` for a row of a known release with a published figure
    for its setting; None when there is nothing to compare with."""
    release = model.get("release") or {}
    name = release.get("published")
    if not name or METRIC not in row.metrics:
        return None
    from reports.rows import source_of
    from reports.vocabulary import DEFAULT_SIZES

    got, n = float(row.metrics[METRIC]), int(row.n)
    own = release_figure(release, row)
    if own is not None:
        expected, n_expected, source = own, DEFAULT_SIZES.get(row.setting, n), str(release.get("figures_source") or "release")
    else:
        figure = published_figure(name, row)
        if figure is None:
            return None
        expected = float(figure.metrics[METRIC])
        n_expected, source = int(figure.n or DEFAULT_SIZES.get(figure.setting, n)), source_of(figure)
    tol = tolerance(expected, n_expected, got, n)
    return {
        "model": name,
        "source": source,
        "metric": METRIC,
        "expected": expected,
        "expected_n": n_expected,
        "got": got,
        "n": n,
        "difference": got - expected,
        "tolerance": tol,
        "verdict": "reproduces" if abs(got - expected) <= tol else "differs",
    }


def describe_check(model: str, setting: str, check: Mapping[str, Any]) -> str:
    """One line for the run log and summary."""
    diff = 100 * check["difference"]
    line = (f"{model} | {setting}: top-1 {100 * check['got']:.2f} vs published {100 * check['expected']:.2f} "
            f"({check['model']}, {check['source']}): {diff:+.2f} points, tolerance {100 * check['tolerance']:.2f}")
    if check["verdict"] == "reproduces":
        return line + ": reproduces published"
    return (f"WARNING: {line}: DOES NOT REPRODUCE the published figure; check preprocessing, activation, "
            "class order, templates and data before using these numbers")


def mismatches(rows: list[Result]) -> list[str]:
    """The warning lines of the rows whose published check failed."""
    return [describe_check(r.model, r.setting, r.provenance["published_check"]) for r in rows
            if (r.provenance or {}).get("published_check", {}).get("verdict") == "differs"]


def with_published_check(row: Result) -> Result:
    """``row`` with ``provenance.published_check`` for its model (``provenance.model``), refreshed
    from its metrics (a rescored row is checked again); unchanged when there is nothing to check."""
    import dataclasses

    provenance = dict(row.provenance or {})
    check = published_check(provenance.get("model") or {}, row)
    provenance.pop("published_check", None)
    if check is not None:
        provenance["published_check"] = check
    return dataclasses.replace(row, provenance=provenance)
