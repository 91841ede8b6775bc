"""``shiftbench estimate``, ``compare`` and ``calibrate`` on run directories written through the
real store and scorer from synthetic predictions with known accuracies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_predictions import nested_predictions, on_the_line, write_run

from harness.cli import main
from reports.run_analyses import compare_pair, settings_of
from reports.stored import StoredRun

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from doubles import tree_state  # noqa: E402

ID_ACC = np.linspace(0.55, 0.9, 5)


def _line_run(tmp_path, infos=None, models=5):
    rng = np.random.default_rng(0)
    acc = ID_ACC[:models]
    id_labels, id_pred = nested_predictions(acc, 3000, 1000, rng)
    ood_labels, ood_pred = nested_predictions(on_the_line(acc, 1.2, -0.8), 2000, 1000, rng)
    cells = {}
    for i in range(models):
        cells[(f"m{i}", "imagenet")] = (id_labels, id_pred[i])
        cells[(f"m{i}", "imagenetv2")] = (ood_labels, ood_pred[i])
    run_dir = tmp_path / "run"
    write_run(run_dir, cells, infos)
    return run_dir, (ood_pred == ood_labels).mean(axis=1)


def test_estimate_prints_the_hidden_label_error(tmp_path, capsys):
    run_dir, truth = _line_run(tmp_path)
    out_json = tmp_path / "est.json"
    assert main(["estimate", str(run_dir), "--shift", "imagenetv2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "hidden-label check on imagenetv2: mean absolute error ALine-S" in out
    assert "holds" in out and "DOES NOT HOLD" not in out
    est = json.loads(out_json.read_text())
    assert est["id_setting"] == "imagenet"
    got = np.array([e["aline_d"] for e in est["estimates"]])
    np.testing.assert_allclose(got, truth, atol=2e-3)
    assert est["mae"]["aline_s"] < 2e-3 and est["agreement_line"]["slope"] == pytest.approx(1.2, abs=0.02)


def test_estimate_warns_about_models_sharing_one_backbone(tmp_path, capsys):
    infos = {f"m{i}": {"method": "wiseft", "alpha": i / 4, "zeroshot": "clip:zs", "finetuned": "ft", "tags": ["wise-ft"]}
             for i in range(5)}
    run_dir, _ = _line_run(tmp_path, infos)
    assert main(["estimate", str(run_dir), "--shift", "imagenetv2"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: all models are WiSE-FT interpolations of clip:zs and ft" in err


def test_estimate_refuses_fewer_than_three_models(tmp_path, capsys):
    run_dir, _ = _line_run(tmp_path, models=2)
    assert main(["estimate", str(run_dir), "--shift", "imagenetv2"]) == 2
    assert "needs 3 or more" in capsys.readouterr().err


def test_compare_two_models_gives_paired_difference_and_er_difference(tmp_path, capsys):
    run_dir, truth = _line_run(tmp_path)
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(run_dir), "--models", "m4,m0", "--json", str(out_json), "--bootstrap", "500"]) == 0
    out = capsys.readouterr().out
    assert "McNemar p" in out and "imagenetv2" in out
    rows = {r["setting"]: r for r in json.loads(out_json.read_text())["pairs"]}
    assert rows["imagenetv2"]["diff"] == pytest.approx(truth[4] - truth[0])
    assert rows["imagenetv2"]["low"] < rows["imagenetv2"]["diff"] < rows["imagenetv2"]["high"]
    assert rows["imagenetv2"]["p_value"] < 1e-10
    er = rows["imagenetv2"]["er"]
    assert er is not None and er["low"] < er["diff"] < er["high"]
    assert rows["imagenet"]["er"] is None  # ID has no effective robustness


def test_compare_a_wiseft_sweep_against_both_endpoints(tmp_path, capsys):
    """alpha 0.5 is right on 600 more OOD images than either endpoint; alpha 0.1 predicts
    exactly as the zero-shot model: significant vs both, and vs neither, respectively."""
    rng = np.random.default_rng(4)
    n = 3000
    labels = rng.integers(0, 1000, n)
    wrong = (labels + 1) % 1000
    right = lambda k: np.where(np.arange(n) < k, labels, wrong)  # noqa: E731
    alphas = {0.0: right(1500), 0.1: right(1500), 0.5: right(2100), 1.0: right(1500)}
    id_pred = {0.0: right(2000), 0.1: right(2000), 0.5: right(2300), 1.0: right(2600)}
    cells, infos = {}, {}
    for a, pred in alphas.items():
        name = f"wiseft(alpha={a:g})"
        cells[(name, "imagenet")] = (labels, id_pred[a])
        cells[(name, "imagenetv2")] = (labels, pred)
        infos[name] = {"method": "wiseft", "alpha": a, "zeroshot": "clip:zs", "finetuned": "ft", "tags": ["wise-ft"]}
    run_dir = tmp_path / "run"
    write_run(run_dir, cells, infos)
    out_json = tmp_path / "sweep.json"
    assert main(["compare", str(run_dir), "--json", str(out_json), "--bootstrap", "500"]) == 0
    assert "WiSE-FT sweep clip:zs -> ft" in capsys.readouterr().out
    (sweep,) = json.loads(out_json.read_text())["wiseft"]
    got = {(r["setting"], r["alpha"], r["endpoint"]): r for r in sweep["rows"]}
    assert got[("imagenetv2", 0.5, "zero-shot")]["significant"] and got[("imagenetv2", 0.5, "fine-tuned")]["significant"]
    assert got[("imagenetv2", 0.5, "zero-shot")]["diff"] == pytest.approx(600 / n)
    assert not got[("imagenetv2", 0.1, "zero-shot")]["significant"]
    assert got[("imagenetv2", 0.1, "zero-shot")]["p_holm"] == 1.0
    assert got[("imagenet", 0.1, "fine-tuned")]["significant"]  # 600 fewer ID images right


def test_compare_names_unknown_models(tmp_path, capsys):
    run_dir, _ = _line_run(tmp_path)
    assert main(["compare", str(run_dir), "--models", "m0,nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_models_are_named_as_the_engine_names_them_commas_included(tmp_path, capsys):
    """The engine's WiSE-FT and soup names hold commas (``wiseft:B[zs ..,ft ..](alpha=0.5)``,
    ``soup:B[..](greedy,n=2)``): ``--models A,B`` split them apart and refused every such pair."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 1000, 400)
    names = ["wiseft:B-32[zs 1a2b3c4d,ft 5e6f7a8b](alpha=0.5)", "soup:B-32[9c8d7e6f](greedy,n=2)", "plain"]
    cells = {}
    for k, name in enumerate(names):
        pred = np.where(np.arange(400) < 100 * (k + 1), labels, (labels + 1) % 1000)
        cells[(name, "imagenet")] = (labels, pred)
        cells[(name, "imagenetv2")] = (labels, pred)
    write_run(tmp_path / "run", cells)
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(tmp_path / "run"), "--models", f"{names[0]},{names[1]}", "--no-testbed",
                 "--bootstrap", "100", "--json", str(out_json)]) == 0, capsys.readouterr().err  # fmt: skip
    assert capsys.readouterr().out.startswith(f"A = {names[0]}\nB = {names[1]}\n")
    rows = {r["setting"]: r for r in json.loads(out_json.read_text())["pairs"]}
    assert rows["imagenetv2"]["diff"] == pytest.approx(-100 / 400)
    assert main(["calibrate", str(tmp_path / "run"), "--models", f"{names[1]},plain", "--out", str(tmp_path / "c.png")]) == 0
    table = capsys.readouterr().out
    assert names[1] in table and "plain" in table and names[0] not in table
    assert main(["compare", str(tmp_path / "run"), "--models", "plain,n=2)"]) == 2
    assert "no model 'n=2)'" in capsys.readouterr().err


def test_calibrate_reports_the_stored_ece_and_fits_only_on_held_out_data(tmp_path, capsys):
    """A temperature fitted on ImageNet val, the very images the figure reports as ID (and whose
    same-class views it compares with each shift), gave an in-sample calibrated ECE: refused, as
    is fitting on a reported shift. The fit on held-out data is checked in test_analyses_e2e."""
    run_dir, _ = _line_run(tmp_path)
    fig, out_json = tmp_path / "cal.png", tmp_path / "cal.json"
    assert main(["calibrate", str(run_dir), "--out", str(fig), "--json", str(out_json)]) == 0
    assert fig.stat().st_size > 0
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["setting"] for r in rows} == {"imagenet", "imagenetv2"}
    stored = {(r.model, r.setting): r.metrics for r in StoredRun(run_dir).rows}
    for r in rows:
        assert r["ece"] == pytest.approx(stored[(r["model"], r["setting"])]["ece"])
        assert r["nll"] == pytest.approx(stored[(r["model"], r["setting"])]["nll"])
    for fit_on in ("imagenet", "imagenetv2"):
        assert main(["calibrate", str(run_dir), "--calibrate-on", fit_on, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert f"--calibrate-on {fit_on}: its images are reported in the calibration figure" in err
        assert "in-sample" in err and not (tmp_path / "x.png").exists()
    assert main(["calibrate", str(run_dir), "--calibrate-on", "imagenet-heldout", "--out", str(fig)]) == 2
    assert "imagenet-heldout predictions" in capsys.readouterr().err


def test_outcomes_of_an_id_view_match_their_row(tmp_path):
    """imagenet@imagenet-r: ImageNet images of R's 200 classes, logits through R's class map."""
    rng = np.random.default_rng(9)
    cells = {}
    for m in ("a", "b"):
        cells[(m, "imagenet")] = (np.repeat(np.arange(1000), 2), rng.integers(0, 1000, 2000))
        cells[(m, "imagenet-r")] = (rng.integers(0, 200, 500), rng.integers(0, 1000, 500))
    write_run(tmp_path / "run", cells)
    run = StoredRun(tmp_path / "run")
    assert run.id_setting("imagenet-r") == "imagenet@imagenet-r"
    for m in ("a", "b"):
        for setting in ("imagenet", "imagenet@imagenet-r", "imagenet-r"):
            o = run.outcomes(m, setting)
            assert o.accuracy == run.row(m, setting).metrics["top1"]
            assert len(o) == run.row(m, setting).n
    assert run.outcomes("a", "imagenet@imagenet-r").logits.shape == (400, 200)
    # compare pairs the ID view with the view and the shift with the shift
    rows = {r["setting"]: r for r in compare_pair(run, "a", "b", settings_of(run, ["a", "b"]), None, 200, 0, 0.95)}
    assert list(rows) == ["imagenet", "imagenet@imagenet-r", "imagenet-r"]
    for setting, r in rows.items():
        assert r["acc_a"] == run.row("a", setting).metrics["top1"] and r["n"] == run.row("a", setting).n


# (the refused command's arguments, given the run and tmp_path with a file "taken"; its error)
REFUSED_OUTPUTS = {
    "calibrate JSON under a file": (lambda run, t: ["calibrate", run, "--out", t / "new" / "cal.png", "--json", t / "taken" / "c.json"],
                                    "--json {t}/taken/c.json: {t}/taken is a file, not a folder; give another path"),
    "calibrate figure of an unknown kind": (lambda run, t: ["calibrate", run, "--out", t / "new" / "cal.pfd"],
                                            "--out {t}/new/cal.pfd: cannot write a .pfd figure; end it in .pdf, .png or .svg"),
    "calibrate figure and JSON one file": (lambda run, t: ["calibrate", run, "--out", t / "new" / "c.png", "--json", t / "new" / "c.png"],
                                           "--out and --json both name {t}/new/c.png: give two paths"),
    "estimate JSON under a file": (lambda run, t: ["estimate", run, "--shift", "imagenetv2", "--json", t / "taken" / "e.json"],
                                   "--json {t}/taken/e.json: {t}/taken is a file, not a folder; give another path"),
}


@pytest.mark.parametrize("case", list(REFUSED_OUTPUTS))
def test_an_output_that_cannot_be_written_is_refused_before_anything_is(tmp_path, capsys, case):
    run_dir, _ = _line_run(tmp_path)
    (tmp_path / "taken").write_text("someone's file")
    args, says = REFUSED_OUTPUTS[case]
    before = tree_state(tmp_path)
    capsys.readouterr()
    assert main([str(a) for a in args(run_dir, tmp_path)]) == 2
    assert tree_state(tmp_path) == before
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(says.format(t=tmp_path))
