"""End to end: inputs -> analysis -> summary.json (schema) and the PDF (read back with pypdf)."""

import json
from pathlib import Path

import numpy as np
import pytest
from report_rows import row
from scipy.special import expit, logit

from harness.api import Result
from harness.cli import main
from reports.report import ReportConfig, run_report
from reports.table import write_table

FIT_FIELDS = {"shift", "x_setting", "y_setting", "transform", "slope", "intercept", "r2", "n", "baseline_models"}
MODEL_FIELDS = {"model", "source", "tags", "shift", "id_acc", "ood_acc", "effective_robustness", "er_low", "er_high"}

# Six standard models exactly on logit(y) = 1.2 logit(x) - 2.0 (ImageNet-R vs ImageNet on R's classes).
X = np.array([0.80, 0.84, 0.88, 0.91, 0.93, 0.95])
Y = expit(1.2 * logit(X) - 2.0)


def _table(tmp_path: Path) -> Path:
    rows = []
    for i, (x, y) in enumerate(zip(X, Y, strict=True)):
        m = f"std{i}"
        rows += [row("pub", m, "imagenet@imagenet-r", x, 10_000, tags=["standard"]),
                 row("pub", m, "imagenet-r", y, 30_000, tags=["standard"]),
                 row("pub", m, "imagenet", x - 0.1, 50_000, tags=["standard"]),
                 row("pub", m, "objectnet", y - 0.3, 18_574, {"version": "1.0", "head": "imagenet-1k", "projection": "max"}, ["standard"])]
    rows += [row("pub", "clipzs", "imagenet", 0.70, 50_000, tags=["clip-zero-shot"]),
             row("pub", "clipzs", "objectnet-names", 0.50, 18_574, {"version": "1.0", "head": "objectnet-113-names"},
                 ["clip-zero-shot"])]
    path = tmp_path / "pub.csv.gz"
    write_table(rows, path)
    return path


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "mine"
    run.mkdir()
    def res(setting, top1, n, shift):
        return Result(model="my-model", setting=setting, shift=shift, shift_version="1", n=n, n_expected=n,
                      metrics={"top1": top1}, provenance={"model": {"tags": ["fine-tuned"]}})
    rows = [res("imagenet", 0.78, 50_000, "imagenet"), res("imagenet@imagenet-r", 0.90, 10_000, "imagenet-r"),
            res("imagenet-r", 0.0, 30_000, "imagenet-r")]
    (run / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in rows))
    return run


def test_cli_end_to_end_with_run_dir(tmp_path, capsys):
    pdf, js = tmp_path / "r.pdf", tmp_path / "s.json"
    rc = main(["report", "--no-testbed", str(_table(tmp_path)), str(_run_dir(tmp_path)), "--bootstrap", "50",
               "--out", str(pdf), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert str(pdf.resolve()) in out and str(js.resolve()) in out
    s = json.loads(js.read_text())
    assert s["schema"] == "shiftbench.report.summary/1"
    for f in s["fits"]:
        assert FIT_FIELDS <= set(f)
    for m in s["models"]:
        assert MODEL_FIELDS <= set(m)
    # the known line is recovered under logit, on the same-class pairing, from the six standard models
    (fit,) = [f for f in s["fits"] if f["shift"] == "imagenet-r" and f["x_setting"] == "imagenet@imagenet-r" and f["transform"] == "logit"]
    assert (fit["slope"], fit["intercept"], fit["r2"], fit["n"]) == pytest.approx((1.2, -2.0, 1.0, 6))
    assert fit["baseline_models"] == [f"pub:std{i}" for i in range(6)]
    # the user's model: scored on the same-class pairing; accuracy 0 clipped and recorded
    (mine,) = [m for m in s["models"] if m["model"] == "my-model" and m["shift"] == "imagenet-r"]
    expected = 0.0 - expit(1.2 * logit(0.90) - 2.0)
    assert mine["x_setting"] == "imagenet@imagenet-r" and mine["source"] == "run:mine" and mine["highlighted"]
    assert mine["effective_robustness"] == pytest.approx(expected)
    # the fit is exact, so its bootstrap part is zero; the interval is the model's own sampling
    # error: the OOD term (0 at y = 0) plus the ID term through the trend's slope f'(x)
    parts = mine["er_interval_parts"]
    assert parts["fit_low"] == pytest.approx(expected) and parts["fit_high"] == pytest.approx(expected)
    f = expit(1.2 * logit(0.90) - 2.0)
    slope = f * (1 - f) * 1.2 / (0.90 * 0.10)
    half = 1.959963984540054 * np.sqrt(slope**2 * 0.90 * 0.10 / 10_000)
    assert parts["sampling_half_width"] == pytest.approx(half, rel=1e-4)
    assert mine["er_low"] == pytest.approx(expected - half, rel=1e-4) and mine["er_high"] == pytest.approx(expected + half, rel=1e-4)
    assert any("run:mine:my-model (y=0)" in c for c in fit["clipped"])
    # ObjectNet: the two heads are two settings and never share a fit; the 113-way head
    # (objectnet-names) has no baseline and says so
    obj = [f for f in s["fits"] if f["shift"] == "objectnet"]
    assert {tuple(sorted(f["protocol"].items())) for f in obj} == {
        (("crop", "none"), ("head", "imagenet-1k"), ("projection", "max"), ("version", "1.0"))}
    (un,) = s["unfitted"]
    assert (un["shift"], un["protocol"]["head"]) == ("objectnet-names", "objectnet-113-names")
    assert "0 baseline models" in un["reason"]
    (zs,) = [m for m in s["models"] if m["model"] == "clipzs"]
    assert zs["effective_robustness"] is None and zs["ood_acc"] == 0.5
    # the PDF reads back: title, summary, one page per group with points scored by it, methods
    from pypdf import PdfReader

    reader = PdfReader(pdf)
    text = [p.extract_text() for p in reader.pages]
    groups_shown = 3  # imagenet-r vs imagenet@imagenet-r, objectnet x2 protocols
    assert len(reader.pages) == 1 + 1 + groups_shown + 1
    assert s["pages"] == len(reader.pages)  # summary.json records the PDF it came with
    assert "Effective robustness report" in text[0] and "objectnet-113-names" in text[0]
    assert "my-model" in text[1]
    assert any("No trend fitted" in t for t in text[2:-1])
    assert "Methods" in text[-1]


def test_bundled_testbed_summary_without_pdf(tmp_path):
    s = run_report(ReportConfig(samples=20, out=None, json=tmp_path / "s.json"))
    shifts = {(f["shift"], f["x_setting"]) for f in s["fits"] if f["transform"] == "probit"}
    assert {("imagenet-sketch", "imagenet"), ("imagenet-r", "imagenet@imagenet-r"), ("imagenet-a", "imagenet@imagenet-a"),
            ("objectnet", "imagenet@objectnet")} <= shifts
    clip = [m for m in s["models"] if m["model"] == "clip:ViT-L-14@openai"]
    # open_clip's ObjectNet figures come from a 113-way names head: the engine's objectnet-names
    assert {m["shift"] for m in clip} == {"imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet-names"}
    assert all(m["highlighted"] for m in clip)
    r = next(m for m in clip if m["shift"] == "imagenet-r")
    assert r["x_setting"] == "imagenet" and r["effective_robustness"] > 0.3
    assert json.loads((tmp_path / "s.json").read_text())["models"]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--baseline", "no-such-tag"], "0 baseline models"),
        (["--format", "timm"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, match):
    table = _table(tmp_path)
    argv = ["report", "--no-testbed", str(table if "--format" not in args else tmp_path / "missing.csv"), *args,
            "--bootstrap", "10", "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]
    rc = main(argv)
    err = capsys.readouterr().err
    if match == "0 baseline models":
        # an empty baseline is a stated, recorded handling: no fits, reasons in the summary
        assert rc == 0
        s = json.loads((tmp_path / "s.json").read_text())
        assert not s["fits"] and all(match in u["reason"] for u in s["unfitted"])
    else:
        assert rc == 2 and match in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "r.pdf").exists()


def test_soups_file_via_results_flag_is_highlighted_and_unpaired_rows_are_stated(tmp_path):
    soups = tmp_path / "greedy_soup_results.jsonl"
    soups.write_text(json.dumps({"model_name": "greedy_soup", "ImageNet": 0.8103, "ImageNetV2": 0.7098,
                                 "ImageNetSketch": 0.5297, "ImageNetR": 0.7236, "ObjectNet": 0.5254, "ImageNetA": 0.5082}) + "\n")
    noid = tmp_path / "noid.jsonl"
    noid.write_text(json.dumps({"model_name": "ood-only", "ImageNet": None, "ImageNetR": 0.7}) + "\n")
    s = run_report(ReportConfig(inputs=[soups, noid], samples=10, out=None, json=None))
    mine = [m for m in s["models"] if m["model"] == "greedy_soup"]
    assert {m["shift"] for m in mine} == {"imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet"}
    assert all(m["highlighted"] and m["x_setting"] == "imagenet" for m in mine)
    sk = next(m for m in mine if m["shift"] == "imagenet-sketch")
    assert sk["effective_robustness"] > 0.2  # far above the ImageNet-1k trend
    # WiSE-FT/soups score ObjectNet-1.0 uncropped through the ImageNet head: no baseline shares that protocol
    obj = next(m for m in mine if m["shift"] == "objectnet")
    assert obj["effective_robustness"] is None and obj["protocol"]["crop"] == "none"
    # (timm publishes resmlp_24_224.fb_dino on ImageNet-A only)
    assert s["unpaired"] == ["soups:noid:ood-only on imagenet-r", "timm:resmlp_24_224.fb_dino on imagenet-a"]


@pytest.mark.parametrize("transform", ["probit", "linear"])
def test_other_transforms_end_to_end(tmp_path, transform):
    s = run_report(ReportConfig(inputs=[_table(tmp_path)], testbed=False, transform=transform, samples=20,
                                out=tmp_path / "r.pdf", json=tmp_path / "s.json"))
    assert s["transform"] == transform and s["pages"] == 6
    transforms = {f["transform"] for f in s["fits"]}
    assert transforms == ({"logit", "probit"} | {transform})
    (fit,) = [f for f in s["fits"] if f["x_setting"] == "imagenet@imagenet-r" and f["transform"] == "logit"]
    assert fit["slope"] == pytest.approx(1.2)
    std = [m for m in s["models"] if m["model"].startswith("std") and m["shift"] == "imagenet-r"]
    assert all(m["effective_robustness"] is not None for m in std)


def test_calibrate_on_without_calibration_pages_is_refused(tmp_path, capsys):
    """``--calibrate-on`` steers only the calibration pages (from run directories' stored
    predictions); with --no-analyses, or with no such run directory, it was accepted and ignored."""
    pdf = tmp_path / "r.pdf"
    base = ["report", "--no-testbed", str(_table(tmp_path)), str(_run_dir(tmp_path)), "--bootstrap", "50",
            "--out", str(pdf), "--json", str(tmp_path / "s.json"), "--calibrate-on", "imagenet-heldout"]
    assert main([*base, "--no-analyses"]) == 2
    assert "--calibrate-on imagenet-heldout fits the calibration pages' temperatures, which --no-analyses leaves out" in capsys.readouterr().err
    assert main(base) == 2  # mine/ holds results.jsonl and no predictions/
    assert "no input is one; pass the run directory, or drop --calibrate-on" in capsys.readouterr().err
    assert not pdf.exists()


def test_a_highlight_that_matches_no_model_is_refused(tmp_path, capsys):
    """A ``--highlight`` pattern matching no model (a typo) labelled nothing, silently."""
    pdf = tmp_path / "r.pdf"
    base = ["report", "--no-testbed", str(_table(tmp_path)), str(_run_dir(tmp_path)), "--bootstrap", "50",
            "--out", str(pdf), "--json", str(tmp_path / "s.json")]
    assert main([*base, "--highlight", "my-model", "--highlight", "my-modle"]) == 2
    assert ("--highlight my-modle: matches no model of this report (a glob on the model name, the exact name, "
            "tag:TAG or source:SOURCE); close: my-model") in capsys.readouterr().err
    assert not pdf.exists()
    assert main([*base, "--highlight", "my-*", "--highlight", "tag:standard"]) == 0


def test_baseline_filters_that_match_no_model_are_refused(tmp_path, capsys):
    """``--baseline-exclude`` and ``--baseline-source`` naming nothing (a typo) changed nothing,
    so the trend was fitted on models the user meant to leave out."""
    base = ["report", "--no-testbed", str(_table(tmp_path)), str(_run_dir(tmp_path)), "--bootstrap", "50",
            "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]
    assert main([*base, "--baseline-exclude", "std_5"]) == 2
    assert "--baseline-exclude std_5: no model name of this report contains it, so it would exclude nothing" in capsys.readouterr().err
    assert main([*base, "--baseline-source", "pbu"]) == 2
    assert "--baseline-source pbu: no model of this report comes from it; sources: pub, run:mine" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()
    assert main([*base, "--baseline-exclude", "std5", "--baseline-source", "pub"]) == 0
    (fit,) = [f for f in json.loads((tmp_path / "s.json").read_text())["fits"]
              if f["shift"] == "imagenet-r" and f["x_setting"] == "imagenet@imagenet-r" and f["transform"] == "logit"]
    assert fit["baseline_models"] == [f"pub:std{i}" for i in range(5)]
