"""End to end on the real ImageNet and ImageNet-R readers (fixtures in their raw layouts):
run -> score -> report, with exact numbers worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness import registry
from harness.api import Classifier, PreprocessSpec
from harness.cli import main
from harness.engine.store import RunDir
from harness.registry import get_shift


class PrefersLowIndex(torch.nn.Module, Classifier):
    """logits[j] = -j for every image: always predicts class 0, then 1, 2, ..."""

    def __init__(self, label_space: str = "imagenet-1k", num_classes: int = 1000) -> None:
        super().__init__()
        self.name, self.label_space, self.num_classes = "low-index", label_space, num_classes
        self.preprocess_spec = PreprocessSpec(image_size=16, resize_size=16)

    def logits(self, images):
        return -torch.arange(self.num_classes, dtype=torch.float32).expand(len(images), self.num_classes)


def low_index_factory(arg: str, **options: str) -> PrefersLowIndex:
    return PrefersLowIndex()


@pytest.mark.slow
def test_run_score_report_on_imagenet_and_imagenet_r_fixtures(tmp_path):
    from shifts.fixtures import write_imagenet_r, write_imagenet_val

    data = tmp_path / "data"
    write_imagenet_val(data, per_class=1)  # 1000 images, one per class
    write_imagenet_r(data, per_class=1)  # 200 images, one per R class
    run_dir = tmp_path / "run"
    args = ["run", "--model", "low:x", "--shifts", "imagenet-r", "--data-root", str(data), "--run-dir", str(run_dir),
            "--workers", "0", "--no-cache", "--no-progress", "--batch-size", "256"]  # fmt: skip
    with registry.models.scoped({"low": low_index_factory}):
        # The fixture holds 1 image per class, not the published 50,000 / 30,000.
        assert main(args) == 2
        assert main([*args, "--allow-incomplete"]) == 0
    rows = {r.setting: r for r in RunDir(run_dir).read_results()}
    assert set(rows) == {"imagenet", "imagenet@imagenet-r", "imagenet-r"}
    # ImageNet: only class 0's image is top-1, classes 0..4 are top-5.
    # logits -j give softmax p_j proportional to e^-j: every image predicts class 0 with confidence
    # p_0 (one bin: ece = |accuracy - p_0|), and the label-j image costs -log p_j.
    log_p = -np.arange(1000.0) - np.log(np.exp(-np.arange(1000.0)).sum())
    assert rows["imagenet"].metrics == pytest.approx(
        {"top1": 1 / 1000, "top5": 5 / 1000, "ece": np.exp(log_p[0]) - 1 / 1000, "nll": -log_p.mean()})
    assert (rows["imagenet"].n, rows["imagenet"].n_expected) == (1000, 50_000)
    # ImageNet-R: logits projected onto R's 200 ImageNet indices (ascending), so R class 0 wins.
    r = np.array(get_shift("imagenet-r").spec.class_map.members)[:, 0]  # R's ImageNet indices
    log_q = -(r - r[0]) - np.log(np.exp(-(r - r[0])).sum())  # log-softmax of the projected logits -r
    expect_r = {"top1": 1 / 200, "top5": 5 / 200, "ece": np.exp(log_q[0]) - 1 / 200, "nll": -log_q.mean()}
    assert rows["imagenet-r"].metrics == pytest.approx(expect_r)
    assert (rows["imagenet-r"].n, rows["imagenet-r"].n_expected) == (200, 30_000)
    # The ID reference on R's classes: ImageNet's 200 images of those classes, same projection.
    assert rows["imagenet@imagenet-r"].metrics == pytest.approx(expect_r)
    assert rows["imagenet@imagenet-r"].n == 200
    # a view of an incomplete ImageNet is incomplete too: 50 images for each of R's 200 classes
    assert rows["imagenet@imagenet-r"].n_expected == 10_000
    assert rows["imagenet-r"].class_map == rows["imagenet@imagenet-r"].class_map is not None
    preds = np.load(RunDir(run_dir).predictions_path("low:x", "imagenet"), allow_pickle=False)
    assert preds["logits"].shape == (1000, 1000) and preds["labels"].tolist() == sorted(preds["labels"].tolist())

    before = (run_dir / "results.jsonl").read_text()
    assert main(["score", str(run_dir)]) == 0
    assert (run_dir / "results.jsonl").read_text() == before

    summary = tmp_path / "summary.json"
    report = ["report", str(run_dir), "--out", str(tmp_path / "report.pdf"), "--json", str(summary), "--bootstrap", "20"]
    # 1 image per class is not the published set: the report refuses it unless told.
    assert main(report) == 2
    assert not summary.exists()
    assert main([*report, "--allow-incomplete"]) == 0
    assert (tmp_path / "report.pdf").stat().st_size > 0
    assert "low:x" in json.dumps(json.loads(summary.read_text()))


def test_a_wilds_split_other_than_the_test_is_held_to_its_published_size(tmp_path):
    from shifts.fixtures import write_iwildcam

    data = tmp_path / "data"
    train = write_iwildcam(data, "train")
    assert sorted(y for _, y in train) == [0, 3]  # so a constant class-0 guess scores 1/2
    run_dir = tmp_path / "run"
    args = ["run", "--model", "zero:x", "--shifts", "iwildcam", "--split", "train", "--data-root", str(data),
            "--run-dir", str(run_dir), "--workers", "0", "--no-cache", "--no-progress"]  # fmt: skip
    with registry.models.scoped({"zero": lambda arg, **o: PrefersLowIndex("iwildcam-182", 182)}):
        assert main(args) == 2  # the fixture's train split is not the published 129,809 images
        assert not (run_dir / "results.jsonl").exists()
        assert main([*args, "--allow-incomplete"]) == 0
    rows = {r.setting: r for r in RunDir(run_dir).read_results()}
    row = rows["iwildcam"]
    assert (row.setting, row.n, row.n_expected) == ("iwildcam", 2, 129_809)
    # the ID split is scored in the same run, always on its own split and published size
    assert (rows["iwildcam:id_test"].n, rows["iwildcam:id_test"].n_expected) == (1, 8_154)
    assert row.id_setting == "iwildcam:id_test" and row.main_metric == "macro_f1"
    assert row.metrics["top1"] == 0.5
    assert row.protocol["split"] == "train"  # never tabled as the official OOD test
    before = (run_dir / "results.jsonl").read_text()
    assert main(["score", str(run_dir)]) == 0  # rescoring keeps the split in the protocol
    assert (run_dir / "results.jsonl").read_text() == before
