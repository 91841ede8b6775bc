"""A run directory written by the real engine round-trips through submit and validate, with
the engine's own exact numbers; against its data, the keys and labels check out."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
import leaderboard_toy as toy  # noqa: E402
from doubles import ColourNet, get_shift, toy_config, write_toy_data  # noqa: E402

from harness.engine.run import Engine, ModelSource  # noqa: E402
from reports.submission import load_card, write_bundle  # noqa: E402
from reports.submission_validate import validate_bundle  # noqa: E402


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    data = write_toy_data(root / "data")
    config = toy_config(data, run_dir=str(root / "run"))
    net = ColourNet()
    Engine(config, get_shift=get_shift).run(
        [ModelSource(name=net.name, identity=net.name, build=lambda: net)]
    )
    return root, data


def test_engine_run_round_trips(engine_run):
    root, data = engine_run
    card = toy.write_card(root / "model.toml", name="ColourNet")
    out = root / "colour.tar.gz"
    manifest = write_bundle(root / "run", load_card(card), out)
    assert sorted(manifest["files"]) == [
        "predictions/colour-net/toy-sub.npz",
        "predictions/colour-net/toy.npz",
        "results.jsonl",
    ]
    assert manifest["shifts"]["toy-sub"] == {
        "version": "1",
        "protocol": {"projection": "max"},
        "expected_size": 4,
    }
    v = validate_bundle(out, required=("toy", "toy-sub"), data_root=data, get_shift=get_shift)
    assert v.ok, v.failures
    # the engine's exact numbers (tests/engine/test_engine_run.py), recomputed from the bundle
    assert {s: (sc.top1, sc.n) for s, sc in v.scores.items()} == {
        "toy": (5 / 8, 8),
        "toy@toy-sub": (3 / 4, 4),
        "toy-sub": (2 / 4, 4),
    }


def test_engine_run_with_a_missing_image_is_caught_against_the_data(engine_run, tmp_path):
    root, data = engine_run
    card = toy.write_card(tmp_path / "model.toml", name="ColourNet")
    out = tmp_path / "colour.tar.gz"
    write_bundle(root / "run", load_card(card), out)
    moved = data / "toy" / "3" / "img07.png"
    moved.rename(tmp_path / "img07.png")
    try:
        v = validate_bundle(out, required=("toy", "toy-sub"), data_root=data, get_shift=get_shift)
    finally:
        (tmp_path / "img07.png").rename(moved)
    assert [str(f) for f in v.failures] == [
        f"[key-mismatch] toy: keys differ from the dataset under {data}: 0 dataset keys not in the bundle, "
        "1 bundle keys not in the dataset (e.g. '3/img07.png')"
    ]
