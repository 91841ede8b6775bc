"""Figure details a paper needs: WiSE-FT sweeps as curves in alpha order, soups and their
ingredients marked, the average-over-shifts points, unique figure names."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
from report_rows import row  # noqa: E402

from reports.analysis import BaselineRule, analyse  # noqa: E402
from reports.export import figure_stem  # noqa: E402
from reports.figures import average_points, scatter, wiseft_curves  # noqa: E402


def _rows():
    rows = []
    for i, (x, y) in enumerate([(0.60, 0.40), (0.70, 0.50), (0.80, 0.62), (0.75, 0.55)]):
        for setting, acc in (("imagenet", x), ("imagenet-sketch", y)):
            rows.append(row("pub", f"std{i}", setting, acc, 50_000, tags=["standard"]))
    # a WiSE-FT sweep listed out of order, a soup and an ingredient
    for alpha, (x, y) in {"0.5": (0.78, 0.62), "0.0": (0.68, 0.60), "1.0": (0.81, 0.52), "0.25": (0.75, 0.63)}.items():
        rows += [row("wiseft:run", f"ViT-B/32 alpha={alpha}", s, a, tags=["wiseft"]) for s, a in (("imagenet", x), ("imagenet-sketch", y))]
    rows += [row("soups:greedy", "greedy_soup", s, a, tags=["soup"]) for s, a in (("imagenet", 0.81), ("imagenet-sketch", 0.53))]
    rows += [row("soups:ind", "ingredient 1", s, a, tags=["fine-tuned"]) for s, a in (("imagenet", 0.79), ("imagenet-sketch", 0.48))]
    return rows


def test_wiseft_sweeps_are_curves_in_alpha_order_and_soups_are_marked():
    (g,) = analyse(_rows(), BaselineRule(), samples=0)
    (base, idx), = wiseft_curves(g, np.ones(len(g.points), dtype=bool))
    assert base == "ViT-B/32" and [g.points[i].model.split("=")[1] for i in idx] == ["0.0", "0.25", "0.5", "1.0"]
    fig, ax = plt.subplots()
    scatter(ax, g, "logit", np.zeros(len(g.points), dtype=bool), set())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "model soups (1)" in labels and "soup ingredients (1)" in labels
    assert any(t.startswith("WiSE-FT, alpha 0") for t in labels)
    (curve,) = [ln for ln in ax.lines if ln.get_label().startswith("WiSE-FT")]
    assert np.all(np.diff(curve.get_xdata()) != 0) and len(curve.get_xdata()) == 4
    plt.close(fig)


def test_average_over_shifts_needs_every_shift():
    rows = _rows() + [row("pub", "std0", "imagenet-r", 0.3, 30_000, tags=["standard"])]
    groups = analyse(rows, BaselineRule(), samples=0)
    pts = average_points(groups, ("imagenet-sketch",))
    assert {p["model"] for p in pts} >= {"std0", "greedy_soup"} and all(p["x"] is not None for p in pts)
    assert [p for p in average_points(groups, ("imagenet-sketch", "imagenet-r")) if p["model"] != "std0"] == []
    std0 = next(p for p in average_points(groups, ("imagenet-sketch", "imagenet-r")))
    assert std0["y"] == (0.40 + 0.3) / 2


def test_a_names_head_objectnet_counts_for_objectnet_in_the_average_only_where_there_is_none():
    """open_clip's ObjectNet is objectnet-names: the average over shifts takes it for ObjectNet, as
    the published tables do, unless the model also has an ImageNet-head ObjectNet figure."""
    head = {"version": "1.0", "head": "imagenet-1k", "projection": "max", "crop": "none"}
    names = {"version": "1.0", "head": "objectnet-113-names", "projection": "none", "crop": "none"}
    rows = []
    for m, on, obj in (("names-only", 0.40, None), ("both", 0.20, 0.30)):
        rows += [row("pub", m, "imagenet", 0.7, 50_000), row("pub", m, "imagenet-sketch", 0.5, 50_889),
                 row("pub", m, "objectnet-names", on, 18_574, names)]
        if obj is not None:
            rows.append(row("pub", m, "objectnet", obj, 18_574, head))
    groups = analyse(rows, BaselineRule(), samples=0)
    assert {g.shift for g in groups} == {"imagenet-sketch", "objectnet", "objectnet-names"}
    pts = {p["model"]: p["y"] for p in average_points(groups, ("imagenet-sketch", "objectnet"))}
    assert pts == {"names-only": pytest.approx((0.5 + 0.40) / 2), "both": pytest.approx((0.5 + 0.30) / 2)}


def test_figure_names_differ_by_protocol():
    rows = [row("a", f"m{i}", s, v, protocol=p, tags=["standard"]) for i in range(3) for s, v, p in
            (("imagenet", 0.5 + i / 10, {}), ("objectnet", 0.3 + i / 10, {"crop": "none"}))]
    rows += [row("b", f"m{i}", s, v, protocol=p, tags=["standard"]) for i in range(3) for s, v, p in
             (("imagenet", 0.5 + i / 10, {}), ("objectnet", 0.3 + i / 10, {"crop": "border-2px"}))]
    stems = [figure_stem(g) for g in analyse(rows, BaselineRule(), samples=0)]
    assert len(stems) == 2 and len(set(stems)) == 2
