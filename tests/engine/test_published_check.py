"""After every cell a known release is compared with its published figure: a mismatch is loud
(run summary, exit status 3) and recorded in ``provenance.published_check``; a match is marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from doubles import engine_flags, registered, write_toy_data

from harness.cli import main
from harness.engine.store import RunDir
from models.checkpoints import file_sha256
from models.releases import EXTRA, Release
from reports.published import tolerance
from reports.rows import published_result, report_tags

# A one-layer open_clip ViT (random weights) standing in for a released CLIP.
TINY = {
    "quick_gelu": True,
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
NAMES = ["red", "green", "blue", "white"]
PUBLISHED = "clip:tiny-release@test"


@pytest.fixture
def release(tmp_path: Path, monkeypatch):
    """A tiny CLIP saved as a state dict, registered as a known release with a published head."""
    from models.clip import create_open_clip, register_config
    from models.prompts import load_classnames

    config = tmp_path / "tiny-release.json"
    config.write_text(json.dumps(TINY))
    register_config(config)
    torch.manual_seed(0)
    torch.save(create_open_clip("tiny-release").state_dict(), tmp_path / "release.pt")
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    sha = file_sha256(tmp_path / "release.pt")
    head = (load_classnames(str(tmp_path / "names.txt"))[0], "simple-imagenet-7")
    monkeypatch.setitem(EXTRA, sha, Release("tiny-release", "test", sha, "quickgelu", PUBLISHED, head))
    monkeypatch.setenv("SHIFTBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def publish(monkeypatch, accuracy: float) -> None:
    """The bundled testbed, plus a published figure for the tiny release on ``toy``."""
    import reports.published as published
    from reports.testbed import load_testbed

    row = published_result("test-publisher", PUBLISHED, "toy", {"top1": accuracy}, 50_000)
    monkeypatch.setattr(published, "published_rows", lambda: [*load_testbed(), row])


def run(release: Path, run_dir: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    with registered():
        data = write_toy_data(release / "data")
        args = ["run", "--model", "clip:tiny-release", "--model-arg", f"weights={release / 'release.pt'}",
                "--model-arg", f"classnames={release / 'names.txt'}", "--model-arg", "templates=simple-imagenet-7",
                "--model-arg", "label_space=toy-4", "--shifts", "toy", *engine_flags(data, run_dir)]
        status = main(args)
    return status, capsys.readouterr().err


def test_a_release_far_from_its_published_figure_is_flagged_and_a_close_one_is_not(release, tmp_path, monkeypatch, capsys):
    publish(monkeypatch, 0.5)
    status, _ = run(release, tmp_path / "first", capsys)
    (row,) = RunDir(tmp_path / "first").read_results()
    got = row.metrics["top1"]
    check = row.provenance["published_check"]
    assert (check["expected"], check["got"], check["model"]) == (0.5, got, PUBLISHED)
    assert check["tolerance"] == pytest.approx(tolerance(0.5, 50_000, got, 8))

    far = 0.0 if got >= 0.5 else 1.0  # at least 0.5 away: beyond any tolerance on 8 images
    publish(monkeypatch, far)
    status, err = run(release, tmp_path / "far", capsys)
    (row,) = RunDir(tmp_path / "far").read_results()
    assert status == 3
    assert row.provenance["published_check"]["verdict"] == "differs"
    assert row.provenance["published_check"]["expected"] == far
    assert "DOES NOT REPRODUCE" in err and PUBLISHED in err

    near = min(1.0, got + 0.01)
    publish(monkeypatch, near)
    status, err = run(release, tmp_path / "near", capsys)
    (row,) = RunDir(tmp_path / "near").read_results()
    assert status == 0 and "DOES NOT REPRODUCE" not in err
    assert row.provenance["published_check"]["verdict"] == "reproduces"
    assert "reproduces published" in err

    # The report marks the rows, and the leaderboard recomputes the check from the bundle.
    from reports.importers import read_results_jsonl

    assert "reproduces-published" in report_tags(read_results_jsonl(tmp_path / "near" / "results.jsonl")[0])
    assert "differs-from-published" in report_tags(read_results_jsonl(tmp_path / "far" / "results.jsonl")[0])
    assert leaderboard_mark(tmp_path / "near", tmp_path) == "reproduces published"
    publish(monkeypatch, far)  # the same bundle, against a figure it does not reproduce
    assert leaderboard_mark(tmp_path / "near", tmp_path) == "differs from published"


def leaderboard_mark(run_dir: Path, tmp_path: Path) -> str:
    """The mark the leaderboard shows for a bundle of ``run_dir``, in its Markdown table too."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "leaderboard"))
    import leaderboard_toy as toy
    from doubles import get_shift

    from reports.leaderboard.markdown import table_md
    from reports.leaderboard.ranking import Table, make_entry, shown_name
    from reports.submission import load_card, write_bundle
    from reports.submission_validate import validate_bundle

    out = tmp_path / f"{run_dir.name}.tar.gz"
    write_bundle(run_dir, load_card(toy.write_card(tmp_path / "card.toml", name="Tiny")), out)
    v = validate_bundle(out, required=("toy",), get_shift=get_shift)
    assert v.ok, v.failures
    entry = make_entry("e", v, {}, ("toy",), "p")
    mark = entry.published_mark()
    assert shown_name(entry).startswith("Tiny")  # validated without the data: marked unverified too
    assert f"{shown_name(entry)} ({mark})" in table_md(Table("p", "toy", (), ("toy",), {}, [entry]))
    return mark


def test_no_check_without_a_known_release_or_a_published_figure(release, tmp_path, monkeypatch, capsys):
    publish(monkeypatch, 0.5)
    EXTRA.clear()  # the same weights, no longer a known release
    status, _ = run(release, tmp_path / "unknown", capsys)
    (row,) = RunDir(tmp_path / "unknown").read_results()
    assert status == 0 and "published_check" not in row.provenance


def test_the_tolerance_grows_with_the_binomial_error_of_both_numbers():
    imagenet = tolerance(0.633, 50_000, 0.633, 50_000)
    assert 0.010 < imagenet < 0.012  # about 1.1 points on ImageNet
    assert tolerance(0.31, 7_500, 0.31, 7_500) > 2 * imagenet - 0.003  # ImageNet-A: fewer images
    assert tolerance(0.633, 50_000, 0.633, 500) > tolerance(0.633, 50_000, 0.633, 50_000)


def test_a_merge_of_a_release_is_not_checked_as_that_release(release, tmp_path, monkeypatch, capsys):
    """WiSE-FT cells load merged weights into an endpoint's module: the endpoint's release (and its
    published figures) must not be claimed for them."""
    publish(monkeypatch, 0.0)
    clip_args = ["--model-arg", f"weights={release / 'release.pt'}", "--model-arg", f"classnames={release / 'names.txt'}",
                 "--model-arg", "templates=simple-imagenet-7", "--model-arg", "label_space=toy-4"]
    state = torch.load(release / "release.pt", weights_only=True)  # a fine-tune of the release: other weights
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "tuned.pt")
    with registered():
        data = write_toy_data(release / "data")
        status = main(["wiseft", "--zeroshot", "clip:tiny-release", "--finetuned", "clip:tiny-release", *clip_args,
                       "--finetuned-arg", f"weights={tmp_path / 'tuned.pt'}",
                       "--alphas", "0.5", "--shifts", "toy", *engine_flags(data, tmp_path / "wiseft")])
    (row,) = RunDir(tmp_path / "wiseft").read_results()
    assert status == 0 and "published_check" not in row.provenance
    assert row.provenance["model"]["release"] is None and row.provenance["model"]["activation"] == "quickgelu"


@pytest.mark.slow
def test_torchvision_weights_are_checked_against_torchvisions_own_figure(tmp_path, monkeypatch, capsys):
    """A torchvision release run on ImageNet (the fixture's 1,000 images) is compared with the
    top-1 torchvision publishes for it; random weights are far from it: loud, exit status 3."""
    from torchvision.models import mobilenet_v3_small

    import models.releases as releases
    from shifts.fixtures import write_imagenet_val

    data = tmp_path / "data"
    write_imagenet_val(data, per_class=1)
    torch.manual_seed(0)
    weights = tmp_path / "mobilenet_v3_small-v1.pth"
    torch.save(mobilenet_v3_small().state_dict(), weights)
    table = (Release("mobilenet_v3_small", "IMAGENET1K_V1", file_sha256(weights)[:8], "",
                     "torchvision:mobilenet_v3_small@IMAGENET1K_V1", None, 0.67668),)
    monkeypatch.setattr(releases, "torchvision_releases", lambda arch: table if arch == "mobilenet_v3_small" else ())
    capsys.readouterr()
    status = main(["run", "--model", "torchvision:mobilenet_v3_small", "--model-arg", f"weights={weights}", "--shifts", "imagenet",
                   "--data-root", str(data), "--run-dir", str(tmp_path / "run"), "--workers", "0", "--no-cache",
                   "--no-progress", "--allow-incomplete", "--batch-size", "250"])  # fmt: skip
    err = capsys.readouterr().err
    (row,) = RunDir(tmp_path / "run").read_results()
    check = row.provenance["published_check"]
    assert status == 3 and check["verdict"] == "differs" and check["expected"] == pytest.approx(0.67668)
    assert check["model"] == "torchvision:mobilenet_v3_small@IMAGENET1K_V1" and "torchvision" in check["source"]
    assert "DOES NOT REPRODUCE" in err and row.provenance["model"]["preprocess_recipe"] == "IMAGENET1K_V1"
