"""The shipped testbed equals its regeneration, and imagenet-testbed's own fits are reproduced
from its own table with its baseline rule (computed here from the reference's definition)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logit
from scipy.stats import linregress

from reports.analysis import BaselineRule, analyse
from reports.rows import model_tags, source_of
from reports.table import dumps
from reports.testbed import TABLE, load_testbed
from reports.testbed.build import build_rows

TB = Path(__file__).resolve().parents[2] / "data" / "published" / "imagenet_testbed"


def test_shipped_table_equals_regenerated():
    assert dumps(load_testbed()) == dumps(build_rows())
    assert (TABLE.parent / "SOURCES.md").exists()


def test_testbed_counts_per_source():
    rows = load_testbed()
    ids = {(source_of(r), r.model) for r in rows if r.setting == "imagenet"}
    assert sum(s == "imagenet-testbed" for s, _ in ids) == 335  # 338 rows, 3 without val
    assert sum(s == "open_clip" for s, _ in ids) == 121
    assert sum(s == "timm" for s, _ in ids) == 1556
    std = {m for r in rows if source_of(r) == "imagenet-testbed" and "standard" in model_tags(r) for m in [r.model]}
    assert len(std) == 87


def _reference_fit(x_col: str, y_col: str, min_x: float):
    """imagenet-testbed: linregress of logit(y) on logit(x) over STANDARD models whose names lack
    'aws', 'batch64', 'subsample' and whose x is at least the plot threshold (percent)."""
    types = json.loads((TB / "model_types.json").read_text())
    xs, ys = [], []
    with open(TB / "robustness_top1s.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            m = r["model"]
            if types.get(m, {}).get("type") != "STANDARD" or any(s in m for s in ("aws", "batch64", "subsample")):
                continue
            if not r[x_col] or not r[y_col] or float(r[x_col]) < min_x:
                continue
            xs.append(float(r[x_col]) / 100)
            ys.append(float(r[y_col]) / 100)
    return linregress(logit(np.array(xs)), logit(np.array(ys))), len(xs)


@pytest.mark.parametrize(
    "shift,x_setting,x_col,y_col,min_x",
    [
        ("imagenetv2", "imagenet", "val", "imagenetv2-matched-frequency-format-val", 55),
        ("imagenet-r", "imagenet@imagenet-r", "val-on-imagenet-r-classes", "imagenet-r", 75),
        ("objectnet", "imagenet@objectnet", "val-on-objectnet-classes", "objectnet-1.0-beta", 55),
    ],
)
def test_reproduces_imagenet_testbed_fits(shift, x_setting, x_col, y_col, min_x):
    ref, n = _reference_fit(x_col, y_col, min_x)
    rule = BaselineRule(("standard",), ("imagenet-testbed",), ("aws", "batch64", "subsample"), min_x / 100)
    rows = [r for r in load_testbed() if source_of(r) == "imagenet-testbed"]
    (g,) = [g for g in analyse(rows, rule, samples=0, shifts=[shift]) if g.x_setting == x_setting]
    t = g.fits["logit"]
    assert t.n == n > 20
    assert t.slope == pytest.approx(ref.slope, rel=1e-9)
    assert t.intercept == pytest.approx(ref.intercept, rel=1e-9)
    assert t.r2 == pytest.approx(ref.rvalue**2, rel=1e-9)


def test_imagenet_a_baseline_leaves_out_the_filter_model():
    rows = [r for r in load_testbed() if source_of(r) == "imagenet-testbed"]
    groups = analyse(rows, BaselineRule(("standard",)), samples=0, shifts=["imagenet-a"])
    (g,) = [g for g in groups if g.x_setting == "imagenet@imagenet-a"]
    names = [p.name for p, b in zip(g.points, g.baseline, strict=True) if b]
    assert g.excluded == ["imagenet-testbed:resnet50"] and "imagenet-testbed:resnet50" not in names
    assert len(names) == 86  # the 87 STANDARD models less resnet50
