"""End to end on the real ImageNet, ImageNetV2 and held-out readers: run -> estimate, compare,
calibrate, report; and an unlabelled folder run -> estimate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from harness import registry
from harness.api import UNLABELED, Classifier, Predictions, PreprocessSpec
from harness.cli import main
from harness.engine.store import RunDir

INV73 = pow(73, -1, 256)


class ResidueGuesser(torch.nn.Module, Classifier):
    """The fixtures colour class y with green (73 y + 50) mod 256: this model reads y mod 256 from
    the green channel and guesses which of the labels with that residue it is from a seeded table
    with 4 + seed entries per residue (entries past 3 guess no label of it): accuracies fall with
    the seed, and models agree on some images and not others."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.name, self.label_space, self.num_classes = f"residue:{seed}", "imagenet-1k", 1000
        self.preprocess_spec = PreprocessSpec(image_size=16, resize_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.table = torch.as_tensor(np.random.default_rng(seed).integers(0, 4 + seed, 256))
        self.margin = 2.0 + seed

    def logits(self, images):
        green = (images[:, 1].mean(dim=(1, 2)) * 255).round().long() % 256
        residue = ((green - 50) * INV73) % 256
        guess = residue + 256 * self.table[residue]
        guess = torch.where(guess < 1000, guess, (residue + 1) % 256)
        out = torch.zeros(len(images), 1000)
        out[torch.arange(len(images)), guess] = self.margin
        return out


def residue_factory(arg: str, **options: str) -> ResidueGuesser:
    return ResidueGuesser(int(arg))


@pytest.mark.slow
def test_run_estimate_compare_calibrate_report_and_an_unlabelled_folder(tmp_path, capsys):
    from shifts.fixtures import write_imagenet_heldout, write_imagenet_val, write_imagenetv2

    data = tmp_path / "data"
    write_imagenet_val(data, per_class=1)
    v2 = write_imagenetv2(data)
    write_imagenet_heldout(data, per_class=2)
    run_dir = tmp_path / "run"
    engine = ["--run-dir", str(run_dir), "--workers", "0", "--no-cache", "--no-progress", "--batch-size", "500"]
    models = [a for s in range(5) for a in ("--model", f"residue:{s}")]
    with registry.models.scoped({"residue": residue_factory}):
        assert main(["run", *models, "--shifts", "imagenetv2,imagenet-heldout", "--data-root", str(data),
                     "--allow-incomplete", *engine]) == 0
        # unlabelled images: the V2 images again, nested two levels deep, no class folders
        unlabelled = tmp_path / "unlabelled"
        for k, (key, _) in enumerate(v2[:400]):
            dest = unlabelled / f"batch{k % 3}" / "day" / f"{k}.jpeg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / "imagenetv2" / "ImageNetV2-matched-frequency" / key, dest)
        assert main(["run", *models, "--shifts", "folder", "--unlabeled", "--data-root", str(unlabelled), *engine]) == 0
    rows = RunDir(run_dir).read_results()
    assert {r.setting for r in rows} == {"imagenet", "imagenetv2", "imagenet-heldout"}  # nothing scored unlabelled
    assert all({"ece", "nll"} <= set(r.metrics) for r in rows)
    stored = Predictions.load(RunDir(run_dir).predictions_path("residue:0", "folder-unlabeled"))
    assert len(stored) == 400 and (stored.labels == UNLABELED).all() and stored.keys[0].startswith("batch0/day/")
    capsys.readouterr()

    # V2's fixture images are ImageNet val's, image for image: OOD accuracy = ID accuracy, and the
    # agreement line is y = x, so ALine must return the ID accuracies exactly.
    out_json = tmp_path / "est.json"
    assert main(["estimate", str(run_dir), "--shift", "imagenetv2", "--json", str(out_json)]) == 0
    assert "hidden-label check on imagenetv2: mean absolute error ALine-S 0.00 points, ALine-D 0.00 points" in capsys.readouterr().out
    est = json.loads(out_json.read_text())
    top1 = {(r.model, r.setting): r.metrics["top1"] for r in rows}
    for e in est["estimates"]:
        assert e["ood_accuracy"] == top1[(e["model"], "imagenetv2")]
        assert e["aline_d"] == pytest.approx(e["id_accuracy"], abs=1e-9)
    assert est["agreement_line"]["slope"] == pytest.approx(1.0) and est["agreement_line"]["intercept"] == pytest.approx(0.0, abs=1e-9)

    assert main(["estimate", str(run_dir), "--shift", "folder-unlabeled", "--json", str(out_json)]) == 0
    assert "folder-unlabeled has no labels" in capsys.readouterr().out
    unl = json.loads(out_json.read_text())
    assert unl["id_setting"] == "imagenet" and unl["n_ood"] == 400 and unl["mae"] is None

    assert main(["compare", str(run_dir), "--models", "residue:0,residue:1", "--no-testbed", "--bootstrap", "200",
                 "--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "imagenetv2" in out and "imagenet-heldout" in out

    # the last run read the unlabelled folder: the held-out list's size needs the ImageNet data
    cal = tmp_path / "cal.json"
    calibrate = ["calibrate", str(run_dir), "--calibrate-on", "imagenet-heldout", "--out", str(tmp_path / "cal.pdf"), "--json", str(cal)]
    assert main(calibrate) == 2
    assert "pass --data-root" in capsys.readouterr().err
    assert main([*calibrate, "--data-root", str(data)]) == 0
    cal_rows = json.loads(cal.read_text())["rows"]
    assert len({r["temperature"] for r in cal_rows}) == 5  # one per model
    assert all(r["nll_ts"] <= r["nll"] + 1e-9 for r in cal_rows if r["setting"] == "imagenet-heldout")

    summary = tmp_path / "summary.json"
    with registry.models.scoped({"residue": residue_factory}):  # back to the ImageNet data root (all cells reused)
        assert main(["run", *models, "--shifts", "imagenetv2", "--data-root", str(data), "--allow-incomplete", *engine]) == 0
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report.pdf"), "--json", str(summary),
                 "--bootstrap", "100", "--allow-incomplete", "--calibrate-on", "imagenet-heldout"]) == 0
    analyses = json.loads(summary.read_text())["analyses"]
    assert {a["shift"] for a in analyses["agreement"]} == {"imagenetv2", "folder-unlabeled"}
    assert analyses["paired"] and len(analyses["calibration"]) == 15
