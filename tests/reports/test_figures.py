"""Figure details a paper needs: WiSE-FT sweeps as curves in alpha order, soups and their
ingredients marked, the average-over-shifts points, unique figure names."""

from pathlib import Path

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


def test_the_engines_default_wiseft_names_are_a_sweep_too():
    """``shiftbench wiseft`` names its models ``wiseft:ARCH[zs ..,ft ..](alpha=0.5)``; only
    ``<base> alpha=<a>`` was recognised, so the engine's own sweeps were drawn as loose points."""
    from models.wiseft import wiseft_label

    rows = [r for r in _rows() if not r.model.startswith("ViT-B/32")]
    for alpha, (x, y) in {0.5: (0.78, 0.62), 0.0: (0.68, 0.60), 1.0: (0.81, 0.52), 1e-05: (0.68, 0.60)}.items():
        name = wiseft_label("ViT-B-32", "1a2b3c4d" * 8, "5e6f7a8b" * 8, alpha)
        rows += [row("run:wiseft", name, s, a, tags=["wise-ft"]) for s, a in (("imagenet", x), ("imagenet-sketch", y))]
    (g,) = analyse(rows, BaselineRule(), samples=0)
    (base, idx), = wiseft_curves(g, np.ones(len(g.points), dtype=bool))
    assert base == "wiseft:ViT-B-32[zs 1a2b3c4d,ft 5e6f7a8b]"
    assert [g.points[i].model.rpartition("=")[2] for i in idx] == ["0)", "1e-05)", "0.5)", "1)"]


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


def test_figure_names_differ_for_settings_that_differ_only_in_replaced_characters():
    """Two user datasets in folders ``my pets`` and ``my_pets``: both figures were written to one
    file name, the second silently replacing the first."""
    rows = [row("a", f"m{i}", s, v, tags=["standard"], id_setting="imagenet") for i in range(3)
            for s, v in (("imagenet", 0.5 + i / 10), ("folder:my pets", 0.3 + i / 10), ("folder:my_pets", 0.2 + i / 10))]
    stems = [figure_stem(g) for g in analyse(rows, BaselineRule(), samples=0)]
    assert len(stems) == 2 and len(set(stems)) == 2
    assert all(s.startswith("folder_my_pets__vs__imagenet__top1__") for s in stems)


def _dense_group():
    """300 baseline models in a narrow band, 12 highlighted models and a WiSE-FT sweep among them."""
    rng = np.random.default_rng(0)
    rows = []
    for i, x in enumerate(np.linspace(0.55, 0.85, 300)):
        y = float(np.clip(x - 0.2 + rng.normal(0, 0.01), 0.01, 0.99))
        rows += [row("pub", f"std{i}", "imagenet", float(x), 50_000, tags=["standard"]),
                 row("pub", f"std{i}", "imagenet-sketch", y, 50_889, tags=["standard"])]
    for i, x in enumerate(np.linspace(0.62, 0.80, 8)):  # close to each other and inside the cloud
        rows += [row("clip", f"clip model number {i}", s, a, tags=["clip-zero-shot"])
                 for s, a in (("imagenet", float(x)), ("imagenet-sketch", float(x - 0.19)))]
    for alpha, (x, y) in {"0.0": (0.68, 0.50), "0.5": (0.76, 0.57), "1.0": (0.80, 0.58), "0.25": (0.73, 0.55)}.items():
        rows += [row("wiseft:run", f"ViT-B/32 alpha={alpha}", s, a, tags=["wiseft"]) for s, a in (("imagenet", x), ("imagenet-sketch", y))]
    (g,) = analyse(rows, BaselineRule(), samples=0)
    highlight = np.array([p.source != "pub" for p in g.points], dtype=bool)
    return g, highlight


def _marker_circles(ax, renderer):
    """(x, y, radius) in display pixels of every marker drawn on the axes, and the WiSE-FT curves
    sampled every pixel."""
    from matplotlib.collections import PathCollection

    px = ax.figure.dpi / 72
    out = []
    for c in ax.collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()):
            xy = c.get_offset_transform().transform(c.get_offsets())
            r = np.sqrt(np.broadcast_to(c.get_sizes(), len(xy))) / 2 * px
            out += [(x, y, rr) for (x, y), rr in zip(xy, r, strict=True)]
    for line in ax.lines:
        if line.get_label().startswith("WiSE-FT") or line.get_gid() == "wiseft-curve":
            xy = line.get_transform().transform(line.get_xydata())
            for a, b in zip(xy[:-1], xy[1:], strict=True):
                k = int(np.hypot(*(b - a))) + 2
                out += [(x, y, line.get_linewidth() / 2 * px) for x, y in np.linspace(a, b, k)]
    return np.array(out)


def _label_boxes(ax, renderer, names):
    from matplotlib.text import Text

    boxes = {}
    for t in ax.texts:
        if t.get_text() in names:
            box = Text.get_window_extent(t, renderer)  # the text alone: an Annotation's adds its leader line
            patch = t.get_bbox_patch()
            if patch is not None:
                box = type(box).union([box, patch.get_window_extent(renderer)])
            boxes[t.get_text()] = (t, box)
    return boxes


@pytest.mark.parametrize("dpi", [72, 110, 200])  # the PDF's, the page PNGs', the standalone figures'
def test_labels_overlap_no_marker_and_no_other_label_and_stay_inside(dpi):
    g, highlight = _dense_group()
    names = {p.model for p, h in zip(g.points, highlight, strict=True) if h}
    fig = plt.figure(figsize=(8.27, 11.69))
    ax = fig.add_axes((0.11, 0.39, 0.83, 0.54))  # the report page's axes
    scatter(ax, g, "logit", highlight, set())
    fig.set_dpi(dpi)  # placed at the figure's own dpi, saved at another
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = _label_boxes(ax, renderer, names)
    assert len(boxes) == 12  # MAX_LABELS of the 12 highlighted models: none dropped
    circles = _marker_circles(ax, renderer)
    frame = ax.get_window_extent(renderer)
    placed = list(boxes.values())
    for i, (text, box) in enumerate(placed):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text.get_text()
        # distance from each marker centre to the box, against the marker's radius
        dx = np.maximum(np.maximum(box.x0 - circles[:, 0], circles[:, 0] - box.x1), 0)
        dy = np.maximum(np.maximum(box.y0 - circles[:, 1], circles[:, 1] - box.y1), 0)
        hit = np.hypot(dx, dy) < circles[:, 2]
        assert not hit.any(), f"{text.get_text()!r} covers {int(hit.sum())} markers"
        for other, obox in placed[i + 1:]:
            assert not box.overlaps(obox), (text.get_text(), other.get_text())
        # a label away from its point is tied to it by a leader line
        point = ax.transData.transform(text.xy)
        gap = np.hypot(max(box.x0 - point[0], 0, point[0] - box.x1), max(box.y0 - point[1], 0, point[1] - box.y1))
        if gap > 12 * fig.dpi / 72:
            assert text.arrow_patch is not None, text.get_text()
    plt.close(fig)


def test_a_label_with_no_free_spot_is_drawn_with_a_leader_line_not_dropped():
    from reports.labels import place_labels

    fig, ax = plt.subplots(figsize=(2, 2))
    grid = np.linspace(0, 1, 12)
    ax.scatter(*np.meshgrid(grid, grid), s=400)  # markers cover the whole axes
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    (label,) = place_labels(ax, [0.5], [0.5], ["a model"])
    assert label.get_text() == "a model" and label.arrow_patch is not None
    fig.canvas.draw()
    box = label.get_bbox_patch().get_window_extent(fig.canvas.get_renderer())
    frame = ax.get_window_extent()
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    plt.close(fig)


def test_a_second_report_into_one_figures_folder_leaves_no_plot_of_the_first(tmp_path):
    """Rerun with other inputs into the same --figures-dir: the plot of a group the new report no
    longer has stayed beside the new ones, passing for one of them. Other files stay."""
    from reports.export import write_figures

    std = [row("pub", f"m{i}", s, v, 50_000, tags=["standard"]) for i in range(3)
           for s, v in (("imagenet", 0.5 + i / 10), ("imagenet-sketch", 0.3 + i / 10), ("imagenetv2", 0.4 + i / 10))]
    folder = tmp_path / "figs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "fig1.pdf").write_text("mine")
    first = write_figures(folder, analyse(std, BaselineRule(), samples=0), [], set(), "logit")
    assert any("imagenetv2__vs__" in f for f in first)
    second = write_figures(folder, analyse([r for r in std if r.setting != "imagenetv2"], BaselineRule(), samples=0), [], set(), "logit")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["notes.txt", "fig1.pdf", *(Path(f).name for f in second)])
    assert not any("imagenetv2" in p.name for p in folder.iterdir())
