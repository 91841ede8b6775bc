"""The report sees every shift: WILDS (iWildCam, FMoW, Camelyon17) in their raw layouts, ImageNetV2
variants, a user ``folder`` shift, each run through ``shiftbench run`` and reported with a
baseline run, with fits checked against a hand computation from the runs' own results.

The models are real classifiers run by the engine: each reads the class a fixture image was
drawn for from its colour (``shifts.fixtures.colour``: the green channel is injective in the
label for up to 256 classes) and answers it on a fixed share of images (``skill``), chosen by
the image's other two channels, else the next class. ImageNet's 1000 classes are not injective
in green: there the engine's seeded ``fake`` models run (near chance, as they should be).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import expit, logit
from scipy.stats import norm

from harness import registry
from harness.api import Classifier, PreprocessSpec, Result
from harness.cli import main

pytestmark = pytest.mark.slow


class ColourOracle(torch.nn.Module, Classifier):
    """Right on a ``skill`` share of images (decided by the image's red and blue), else class + 1."""

    def __init__(self, name: str, skill: float, num_classes: int, label_space: str) -> None:
        super().__init__()
        self.name, self.skill, self.num_classes, self.label_space = name, skill, num_classes, label_space
        self.preprocess_spec = PreprocessSpec(image_size=8, resize_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.greens = torch.tensor([(73 * k + 50) % 256 for k in range(num_classes)], dtype=torch.float32)

    def logits(self, images):
        rgb = torch.as_tensor(images, dtype=torch.float32).mean(dim=(2, 3)) * 255  # [B, 3]
        label = torch.argmin((rgb[:, 1:2] - self.greens[None, :]).abs(), dim=1)
        draw = ((rgb[:, 0].round() * 31 + rgb[:, 2].round() * 17) % 100) / 100
        pred = torch.where(draw < self.skill, label, (label + 1) % self.num_classes)
        return torch.nn.functional.one_hot(pred, self.num_classes).float()

    def describe(self):
        return {"name": self.name, "label_space": self.label_space, "tags": ["oracle"], "weights_sha256": None}


def oracle(arg: str, skill: str = "0.5", num_classes: str = "2", label_space: str = "x", **_: str) -> ColourOracle:
    return ColourOracle(f"oracle:{arg}", float(skill), int(num_classes), label_space)


WILDS = {  # shift: (label space, classes, ID split, main metric)
    "iwildcam": ("iwildcam-182", 182, "id_test", "macro_f1"),
    "fmow": ("fmow-62", 62, "id_test", "worst_acc:region!Other"),
    "camelyon17": ("camelyon17-2", 2, "id_val", "top1"),
}
BASELINE_SKILLS = (0.2, 0.35, 0.5, 0.65, 0.8)
MINE_SKILLS = (0.45, 0.9)
N = 40  # images per WILDS split in these fixtures


def write_wilds(data: Path, mp: pytest.MonkeyPatch) -> None:
    """The fixture writers with N images in each compared split (the layouts are the writers')."""
    from shifts import fixtures
    from shifts.wilds import fmow_categories

    iw = [("id_test", 1 + k % 3, (k * 7) % 182) for k in range(N)] + [("test", 10 + k % 4, (k * 11) % 182) for k in range(N)]
    cats = fmow_categories()
    codes = [c for _, c, _ in fixtures.FMOW_COUNTRIES]
    fm = [("test", cats[(k * 5) % 62], codes[k % 5], f"2012-0{1 + k % 9}-01T00:00:00Z", "id_test") for k in range(N)]
    fm += [("test", cats[(k * 3) % 62], codes[k % 5], f"2016-0{1 + k % 9}-01T00:00:00Z", "test") for k in range(N)]
    ca = [("004", 4, 32 * k, 7, k % 2, 4, 0, 1) for k in range(N)] + [("021", 3, 32 * k, 9, (k // 2) % 2, 23, 2, 0) for k in range(N)]
    mp.setattr(fixtures, "IWILDCAM_ROWS", iw)
    mp.setattr(fixtures, "FMOW_ROWS", fm)
    mp.setattr(fixtures, "CAMELYON_ROWS", ca)
    fixtures.write_iwildcam(data)
    fixtures.write_fmow(data)
    fixtures.write_camelyon17(data)


def run(*args: str) -> None:
    assert main(["run", *args, "--workers", "0", "--no-cache", "--no-progress", "--allow-incomplete", "--batch-size", "256"]) == 0


def run_oracles(run_dir: Path, data: Path, shift: str, skills, prefix: str) -> None:
    space, k, _, _ = WILDS.get(shift, (None, 4, None, None))
    models = []
    for s in skills:
        models += ["--model", f"oracle:{prefix}{int(100 * s)}", "--model-arg", f"skill={s}", "--model-arg", f"num_classes={k}",
                   "--model-arg", f"label_space={space or 'folder:' + data.name}"]
    run(*models, "--shifts", shift, "--data-root", str(data), "--run-dir", str(run_dir))


def clip(a, n):
    """Half an example from 0 and 1; 1e-4 where there is no test-set size (macro-F1, worst region)."""
    n = np.asarray(n, dtype=float)
    eps = np.where(n > 0, 0.5 / np.where(n > 0, n, 1), 1e-4)
    return np.clip(a, eps, 1 - eps)


@pytest.fixture(scope="module")
def reached(tmp_path_factory):
    from shifts.fixtures import write_folder, write_imagenet_val, write_imagenetv2

    root = tmp_path_factory.mktemp("reach")
    data, runs = root / "data", root / "runs"
    with pytest.MonkeyPatch.context() as mp, registry.models.scoped({"oracle": oracle}):
        write_wilds(data, mp)
        for shift in WILDS:
            run_oracles(runs / f"base-{shift}", data, shift, BASELINE_SKILLS, "b")
            run_oracles(runs / f"mine-{shift}", data, shift, MINE_SKILLS, "m")
        # ImageNet and two ImageNetV2 variants: fake seeded models
        write_imagenet_val(data, per_class=1)
        for variant in ("threshold-0.7", "top-images"):
            write_imagenetv2(data, variant)
        fakes = [a for s in (0, 1, 2) for a in ("--model", f"fake:s{s}", "--model-arg", f"seed={s}")]
        # a shift registered from a test package (toy_plugin), as an entry point would: no report change
        with registry.shifts.scoped({"imagenet-retaken": "toy_plugin:RetakenImageNet"}):
            run(*fakes, "--shifts", "imagenetv2-threshold-0.7,imagenetv2-top-images,imagenet-retaken", "--data-root", str(data),
                "--run-dir", str(runs / "v2"))
        # a user folder shift and the folder dataset it is compared with, run apart
        for name, per_class in (("pets-id", 6), ("pets-ood", 5)):
            write_folder(root / name, per_class)
            run_oracles(runs / name, root / name, "folder", (0.3, 0.6, 0.85), "f")
    # a result of a shift no one registered: the report must list it, not lose it
    odd = root / "odd.jsonl"
    odd.write_text(Result("oracle:m45", "imagenet-c", "imagenet-c", "1", 10, 10, {"top1": 0.3}).to_json() + "\n")
    out = root / "out"
    args = ["report", "--no-testbed", "--bootstrap", "200", "--allow-incomplete", "--out", str(out / "report.pdf"), "--json", str(out / "summary.json"),
            "--png-dir", str(out / "pages"), "--figures-dir", str(out / "figures"),
            *(a for shift in WILDS for a in ("--baseline-results", str(runs / f"base-{shift}"))),
            *(str(runs / f"mine-{shift}") for shift in WILDS), str(runs / "v2"), str(runs / "pets-id"), str(runs / "pets-ood"),
            str(odd), "--id-shift", "folder:pets-ood=folder:pets-id"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    return root, runs, out, json.loads((out / "summary.json").read_text()), buf.getvalue()


def results(run_dir: Path) -> list[Result]:
    return [Result.from_dict(json.loads(x)) for x in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("shift", list(WILDS))
def test_wilds_fits_and_effective_robustness_equal_a_hand_computation(reached, shift):
    _, runs, _, s, _ = reached
    _, _, id_split, main_metric = WILDS[shift]
    id_setting = f"{shift}:{id_split}"
    base = results(runs / f"base-{shift}")
    mine = results(runs / f"mine-{shift}")
    for metric in dict.fromkeys(("top1", main_metric)):
        def xy(rows, metric=metric):
            by = {(r.model, r.setting): r for r in rows}
            models = sorted({r.model for r in rows})
            x = np.array([by[m, id_setting].metrics[metric] for m in models])
            y = np.array([by[m, shift].metrics[metric] for m in models])
            n = metric == "top1"
            nx = np.array([by[m, id_setting].n if n else 0 for m in models])
            ny = np.array([by[m, shift].n if n else 0 for m in models])
            return models, x, y, nx, ny

        _, bx, by_, bnx, bny = xy(base)
        zx, zy = logit(clip(bx, bnx)), logit(clip(by_, bny))
        slope = ((zx - zx.mean()) * (zy - zy.mean())).sum() / ((zx - zx.mean()) ** 2).sum()
        intercept = zy.mean() - slope * zx.mean()
        (fit,) = [f for f in s["fits"] if f["shift"] == shift and f["metric"] == metric and f["transform"] == "logit"]
        assert fit["x_setting"] == id_setting and fit["n"] == len(BASELINE_SKILLS)
        assert (fit["slope"], fit["intercept"]) == pytest.approx((slope, intercept), rel=1e-9, abs=1e-9)
        assert sorted(fit["baseline_models"]) == sorted(f"baseline:base-{shift}:{m}" for m in {r.model for r in base})
        models, mx, my, mnx, mny = xy(mine)
        for m, x, y, nx, ny in zip(models, mx, my, mnx, mny, strict=True):
            pred = expit(slope * logit(clip(x, nx)) + intercept)
            (row,) = [r for r in s["models"] if r["model"] == m and r["shift"] == shift and r["metric"] == metric]
            assert row["effective_robustness"] == pytest.approx(y - pred, abs=1e-9)
            assert row["highlighted"] and row["x_setting"] == id_setting
            parts = row["er_interval_parts"]
            if metric == "top1":
                # the binomial term by hand: OOD variance plus ID variance through the trend's slope
                d = pred * (1 - pred) * slope / (x * (1 - x))
                half = norm.ppf(0.975) * np.sqrt(y * (1 - y) / ny + d**2 * x * (1 - x) / nx)
                assert parts["sampling_half_width"] == pytest.approx(half, rel=1e-3)
                assert row["er_low"] <= row["effective_robustness"] - half + 1e-12
                assert row["er_high"] >= row["effective_robustness"] + half - 1e-12
                id_n = _published(shift, id_split)
                assert row["images"] == [f"{id_setting}: {nx} of {id_n} images", f"{shift}: {ny} of {_published(shift)} images"]
            else:
                assert parts["sampling_half_width"] is None  # no binomial size for macro-F1 / worst-region
            assert row["er_low"] <= parts["fit_low"] + 1e-12 and row["er_high"] >= parts["fit_high"] - 1e-12


def _published(shift: str, split: str | None = None) -> int:
    from harness.registry import get_shift

    return get_shift(shift).expected_size(split)


def test_v2_variants_the_user_folder_shift_and_a_plugin_shift_get_pages(reached):
    _, _, out, s, _ = reached
    shown = {(m["shift"], m["x_setting"]) for m in s["models"]}
    assert {("imagenetv2-threshold-0.7", "imagenet"), ("imagenetv2-top-images", "imagenet"),
            ("folder:pets-ood", "folder:pets-id"), ("imagenet-retaken", "imagenet")} <= shown
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(out / "report.pdf").pages)
    for label in ("imagenet-retaken vs imagenet", "imagenetv2-threshold-0.7 vs imagenet", "imagenetv2-top-images vs imagenet", "folder:pets-ood vs folder:pets-id",
                  "iwildcam vs iwildcam:id_test (macro_f1)", "fmow vs fmow:id_test", "camelyon17 vs camelyon17:id_val"):
        assert label in text, label
    # the fake ImageNet models are all near chance: then they are the plot, not a list
    assert "Near chance (ID below 5%)" not in text


def test_near_chance_models_are_left_off_the_axes_and_listed():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from report_rows import row

    from reports.analysis import BaselineRule, analyse
    from reports.figures import near_chance, scatter

    rows = []
    for i, (x, y) in enumerate([(0.6, 0.4), (0.7, 0.5), (0.8, 0.62), (0.01, 0.002)]):
        rows += [row("pub", f"m{i}", "imagenet", x, 50_000, tags=["standard"]),
                 row("pub", f"m{i}", "imagenet-sketch", y, 50_889, tags=["standard"])]
    (g,) = analyse(rows, BaselineRule(min_x=0.05), samples=0)
    assert near_chance(g).tolist() == [False, False, False, True]
    fig, ax = plt.subplots()
    hidden = scatter(ax, g, "logit", np.zeros(4, dtype=bool), set())
    lo, hi = ax.get_xlim()
    assert hidden == 0 and lo > logit(0.3)  # the axes span the three others (from 40%), not down to 0.2%
    plt.close(fig)


def test_nothing_is_dropped_silently(reached):
    _, _, out, s, last = reached
    odd = [d for d in s["dropped"] if d["setting"] == "imagenet-c"]
    assert odd == [{"source": "run:odd", "model": "oracle:m45", "setting": "imagenet-c", "metric": "top1",
                    "reason": "unknown-shift", "detail": odd[0]["detail"]}]
    assert "--id-shift" in odd[0]["detail"]
    assert last.strip().splitlines()[-1].endswith(f"{len(s['dropped'])} input rows not placed (listed with reasons in the PDF and summary.json)")
    from pypdf import PdfReader

    pages = [p.extract_text() for p in PdfReader(out / "report.pdf").pages]
    (page,) = [p for p in pages if p.startswith("Rows not placed")]
    assert "[unknown-shift] run:odd: oracle:m45 on imagenet-c" in page
    assert s["pages"] == len(pages)


def test_figures_and_tables_for_a_paper(reached):
    _, _, out, s, _ = reached
    figs = out / "figures"
    pdfs = sorted(p.stem for p in figs.glob("*.pdf"))
    assert pdfs == sorted(p.stem for p in figs.glob("*.png"))  # every plot as vector and raster
    assert any(p.startswith("iwildcam__vs__iwildcam_id_test__macro_f1") for p in pdfs)
    csv_text = (figs / "summary.csv").read_text()
    tex = (figs / "summary.tex").read_text()
    header = csv_text.splitlines()[0].split(",")
    assert header[:3] == ["model", "source", "id_top1"] and header[-3:] == ["avg_er", "avg_er_shifts", "images"]
    names = [line.split(",")[0] for line in csv_text.splitlines()[1:]]
    assert len(names) == len(set(zip(names, [line.split(",")[1] for line in csv_text.splitlines()[1:]], strict=True)))
    assert "oracle:m90" in names and r"\begin{tabular}" in tex and r"\bottomrule" in tex
    assert sorted(s["figures"]) == sorted(str(p) for p in figs.iterdir() if not p.name.startswith("."))


def test_split_and_decoder_separate_rows_of_any_setting():
    from reports.vocabulary import protocol_key

    assert protocol_key("iwildcam", {"split": "test"}) != protocol_key("iwildcam", {"split": "train"})
    assert protocol_key("imagenet-sketch", {"decoder": "nvjpeg"}) == (("decoder", "nvjpeg"),)
    assert protocol_key("imagenet-sketch", {}) == ()
