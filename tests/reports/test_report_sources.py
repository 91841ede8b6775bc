"""Whose figure a point is: an input never merges with the bundled tables, two runs in one WiSE-FT
results DB stay two sweeps, and a table listing one model twice with two figures is refused."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import _table

from harness.cli import main
from reports import importers
from reports.analysis import BaselineRule, analyse
from reports.figures import wiseft_curves
from reports.report import ReportConfig, run_report


def _timm_folder(folder: Path, rows: dict[str, list[tuple[str, str, str]]]) -> Path:
    folder.mkdir(parents=True)
    for stem, lines in rows.items():
        text = "model,img_size,top1,top1_err\n" + "".join(f"{m},{size},{top1},{100 - float(top1):.3f}\n" for m, size, top1 in lines)
        (folder / f"results-{stem}.csv").write_text(text)
    return folder


def test_a_timm_folder_of_your_own_never_joins_the_bundled_timm_source(tmp_path):
    """resnet18.tv_in1k re-evaluated on ImageNet and Sketch only: its rows were read as the bundled
    ``timm`` source's, so the published ImageNet figure was replaced by yours and your ImageNet
    accuracy was paired with the published ImageNetV2, -R and -A figures, exit 0."""
    mine = _timm_folder(tmp_path / "exp" / "results", {"imagenet": [("resnet18.tv_in1k", "224", "70.000")],
                                                        "sketch": [("resnet18.tv_in1k", "224", "40.000")]})
    s = run_report(ReportConfig(inputs=[mine], samples=0, out=None, json=None, analyses=False))
    pts = {(m["source"], m["shift"]): m for m in s["models"] if m["model"] == "resnet18.tv_in1k"}
    assert {src for src, _ in pts} == {"timm", "timm:exp/results"}
    # the published figures stay the published ones
    assert pts["timm", "imagenetv2"]["id_acc"] == pytest.approx(0.69752) and pts["timm", "imagenet-sketch"]["ood_acc"] == pytest.approx(0.20238)
    # yours are placed only where you have both figures, under your own source, highlighted
    assert sorted(shift for src, shift in pts if src == "timm:exp/results") == ["imagenet-sketch"]
    yours = pts["timm:exp/results", "imagenet-sketch"]
    assert (yours["id_acc"], yours["ood_acc"], yours["highlighted"]) == (pytest.approx(0.70), pytest.approx(0.40), True)
    assert not any(m["highlighted"] for m in s["models"] if m["source"] == "timm")
    assert s["sources"]["timm:exp/results"] == 2 and not any(d["reason"] == "duplicate" for d in s["dropped"])


def _wiseft_db(path: Path) -> Path:
    """One results DB appended by two fine-tunes of ViT-B/32: ft1 swept at five alphas, ft2 at three."""
    base = {"model": "ViT-B/32", "train_dataset": "ImageNet", "template": "openai_imagenet_template"}
    rows = []
    for ft, alphas, drop in (("ft1.pt", (0.0, 0.25, 0.5, 0.75, 1.0), 0.0), ("ft2.pt", (0.0, 0.5, 1.0), 0.05)):
        for a in alphas:
            rows.append({**base, "load": ["zs.pt", ft], "alpha": [a], "ImageNet:top1": 0.63 + 0.15 * a,
                         "ImageNetSketch:top1": 0.42 - drop * a})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_fine_tunes_in_one_wiseft_results_db_are_two_sweeps(tmp_path):
    """Both runs' rows were named ``ViT-B/32 alpha=<a>``: ft2's alphas replaced ft1's and the curve
    went through points of two different fine-tunes."""
    rows = importers.load(_wiseft_db(tmp_path / "wf.jsonl"))
    sketch = {r.model: r.metrics["top1"] for r in rows if r.setting == "imagenet-sketch"}
    assert len(sketch) == 8
    assert sketch["ViT-B/32 [load=zs.pt,ft1.pt] alpha=1.0"] == 0.42
    assert sketch["ViT-B/32 [load=zs.pt,ft2.pt] alpha=1.0"] == pytest.approx(0.42 - 0.05)
    (g,) = [g for g in analyse(rows, BaselineRule(tags=("none",)), samples=0) if g.shift == "imagenet-sketch"]
    curves = {base: [g.points[i].y for i in idx] for base, idx in wiseft_curves(g, np.ones(len(g.points), dtype=bool))}
    assert curves == {"ViT-B/32 [load=zs.pt,ft1.pt]": [0.42] * 5,
                      "ViT-B/32 [load=zs.pt,ft2.pt]": [0.42, 0.42 - 0.025, 0.42 - 0.05]}  # fmt: skip


def test_one_wiseft_run_keeps_its_plain_names_and_a_rerun_counts_once(tmp_path):
    f = _wiseft_db(tmp_path / "wf.jsonl")
    lines = f.read_text().splitlines()[:5]
    f.write_text("\n".join(lines + lines[:2]) + "\n")  # the run's first two alphas evaluated again
    names = {r.model for r in importers.load(f)}
    assert names == {f"ViT-B/32 alpha={a}" for a in (0.0, 0.25, 0.5, 0.75, 1.0)}


def test_a_model_listed_twice_with_two_figures_is_refused_naming_the_file(tmp_path, capsys):
    """A timm results file concatenated from two evaluations: the later row silently won."""
    args = ["report", "--no-testbed", str(_table(tmp_path)), "--bootstrap", "0",
            "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]  # fmt: skip
    same = _timm_folder(tmp_path / "same", {"imagenet": [("m.in1k", "224", "80.000")] * 2,
                                            "sketch": [("m.in1k", "224", "30.000")]})
    assert main([*args, "--results", str(same)]) == 0, capsys.readouterr().err  # an identical copy counts once
    capsys.readouterr()
    twice = _timm_folder(tmp_path / "twice", {"imagenet": [("m.in1k", "224", "80.000"), ("m.in1k", "224", "79.000")],
                                              "sketch": [("m.in1k", "224", "30.000")]})
    (tmp_path / "r.pdf").unlink()
    assert main([*args, "--results", str(twice)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{twice}: two different rows for model 'm.in1k@224px' on 'imagenet' ({{'top1': 0.8}} and {{'top1': 0.79}})" in err
    assert not (tmp_path / "r.pdf").exists()


def test_a_timm_shift_file_in_fractions_is_refused_by_its_error_column(tmp_path):
    """Only the ImageNet file was checked for fractions: a Sketch file holding 0.452 was read as
    0.452% and the model reported 40 points below the trend."""
    folder = _timm_folder(tmp_path / "results", {"imagenet": [("m.in1k", "224", "80.100")]})
    (folder / "results-sketch.csv").write_text("model,img_size,top1,top1_err\nm.in1k,224,0.452,0.548\n")
    try:
        importers.load(folder)
    except ValueError as exc:
        assert str(exc).startswith(f"{folder / 'results-sketch.csv'}:2: top1 0.452 and top1_err 0.548 add up to 1, not 100")
    else:
        raise AssertionError("a fractions file was read as percent")
    (folder / "results-sketch.csv").write_text("model,img_size,top1,top1_err\nm.in1k,224,0.452,99.548\n")
    assert {r.setting: r.metrics["top1"] for r in importers.load(folder)}["imagenet-sketch"] == pytest.approx(0.00452)  # percent, as written


def test_a_timm_model_at_two_sizes_across_files_is_never_paired_across_them(tmp_path):
    """ImageNet at 288 px, Sketch at 224 px: each file has the model once, so both rows were named
    ``m.in1k`` and the 288 px ImageNet accuracy was paired with the 224 px Sketch one."""
    folder = _timm_folder(tmp_path / "results", {"imagenet": [("m.in1k", "288", "81.000"), ("n.in1k", "224", "75.000")],
                                                 "sketch": [("m.in1k", "224", "30.000"), ("n.in1k", "224", "25.000")]})
    names = {(r.model, r.setting) for r in importers.load(folder)}
    assert names == {("m.in1k@288px", "imagenet"), ("m.in1k@224px", "imagenet-sketch"),
                     ("n.in1k", "imagenet"), ("n.in1k", "imagenet-sketch")}  # fmt: skip


def test_your_run_directory_is_highlighted_whatever_its_folder_name(tmp_path):
    """A run directory named ``exp[1]``: its source became the glob ``run:exp[1]``, which matches
    ``run:exp1`` but not itself, so the model was left out of the summary table and unlabelled."""
    from test_report import _run_dir

    (tmp_path / "a").mkdir()
    run = _run_dir(tmp_path / "a").rename(tmp_path / "a" / "exp[1]")
    s = run_report(ReportConfig(inputs=[_table(tmp_path), run], testbed=False, samples=0, out=None, json=None, analyses=False))
    mine = [m for m in s["models"] if m["model"] == "my-model"]
    assert {m["source"] for m in mine} == {"run:exp[1]"} and all(m["highlighted"] for m in mine)


def test_a_highlight_naming_an_engine_model_exactly_matches_it():
    """``--highlight 'wiseft:B[zs 1a2b,ft 5e6f](alpha=0.5)'`` matched nothing: as a glob, ``[...]``
    is one character of a set, so the named model was left out of the summary table."""
    from report_rows import row

    from reports.analysis import highlight_mask, pair

    name = "wiseft:B-32[zs 1a2b3c4d,ft 5e6f7a8b](alpha=0.5)"
    points = pair([row("run:w", m, s, 0.5, tags=["wise-ft"]) for m in (name, "other") for s in ("imagenet", "imagenet-sketch")])
    assert [p.model for p, h in zip(points, highlight_mask(points, [name]), strict=True) if h] == [name]
    assert [p.model for p, h in zip(points, highlight_mask(points, ["WISEFT:*"]), strict=True) if h] == [name]
    assert highlight_mask(points, ["source:run:w"]).all()
