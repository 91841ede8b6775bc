"""After every cell: does a known release reproduce its published accuracy?

A model whose weights are a known release (``models.releases``; its ``describe()`` names the
published model under ``release.published``) is compared, setting by setting, with that
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


def published_rows() -> list[Any]:
    """The published figures compared against: the bundled testbed."""
    from reports.testbed import load_testbed

    return load_testbed()


def published_figure(name: str, row: Result) -> Any | None:
    """The testbed's top-1 row of model ``name`` for ``row``'s setting on the same protocol, if any."""
    import dataclasses

    from reports.importers import rows_of_result

    scored = dataclasses.replace(row, main_metric=METRIC)  # only top-1 is compared
    mine = [r for r in rows_of_result(scored, "run", f"{row.model} | {row.setting}") if r.metric == METRIC]
    if not mine:
        return None
    key = mine[0].protocol_key()
    for published in published_rows():
        if (published.model == name and published.setting == mine[0].setting and published.metric == METRIC
                and published.protocol_key() == key):
            return published
    return None


def published_check(model: Mapping[str, Any], row: Result) -> dict[str, Any] | None:
    """``{expected, got, verdict, ...}`` for a row of a known release with a published figure
    for its setting; None when there is nothing to compare with."""
    release = model.get("release") or {}
    name = release.get("published")
    if not name or METRIC not in row.metrics:
        return None
    figure = published_figure(name, row)
    if figure is None:
        return None
    from reports.table import DEFAULT_SIZES

    got, n = float(row.metrics[METRIC]), int(row.n)
    n_expected = int(figure.n or DEFAULT_SIZES.get(figure.setting, n))
    tol = tolerance(figure.accuracy, n_expected, got, n)
    return {
        "model": name,
        "source": figure.source,
        "metric": METRIC,
        "expected": figure.accuracy,
        "expected_n": n_expected,
        "got": got,
        "n": n,
        "difference": got - figure.accuracy,
        "tolerance": tol,
        "verdict": "reproduces" if abs(got - figure.accuracy) <= tol else "differs",
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
