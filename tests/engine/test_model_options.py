"""Each model's own options: ``--model-arg`` binds to the ``--model`` before it."""

from __future__ import annotations

import numpy as np
import pytest
from doubles import LINEAR_WEIGHTS, engine_flags, mean_rgb

from harness.api import Predictions
from harness.cli import main
from harness.cli.run import split_model_items
from harness.config import RunConfig, model_entry, parse_model_entry, resolve
from harness.engine.store import RunDir


def test_options_bind_to_the_model_before_them_and_shared_ones_to_all():
    items = [("arg", "seed=3"), ("model", "clip:ViT-B-32"), ("arg", "weights=/ckpt/my b32.pt"), ("model", "timm:resnet50"), ("arg", "label=r50")]
    models, shared = split_model_items(items)
    assert shared == ["seed=3"]
    assert [parse_model_entry(m) for m in models] == [
        ("clip:ViT-B-32", {"weights": "/ckpt/my b32.pt"}),
        ("timm:resnet50", {"label": "r50"}),
    ]
    config = RunConfig(models=tuple(models), model_args=tuple(shared), cache_dir="")
    assert config.model_specs() == [
        ("clip:ViT-B-32", {"seed": "3", "weights": "/ckpt/my b32.pt"}),
        ("timm:resnet50", {"seed": "3", "label": "r50"}),
    ]
    assert split_model_items(None) == (None, None)


def test_own_options_override_shared_ones_and_entries_round_trip():
    entry = model_entry("clip:ViT-B-32", ["weights=a b.pt", "seed=1"])
    assert parse_model_entry(entry) == ("clip:ViT-B-32", {"weights": "a b.pt", "seed": "1"})
    config = RunConfig(models=(entry,), model_args=("seed=0", "scale=100"), cache_dir="")
    assert config.model_specs() == [("clip:ViT-B-32", {"seed": "1", "scale": "100", "weights": "a b.pt"})]


@pytest.mark.parametrize("entry", ["weights=x.pt", "clip:B-32 weights", "clip:B-32 =x", "clip:B-32 'unclosed"])
def test_malformed_model_entries_are_refused(entry):
    with pytest.raises(ValueError, match="model"):
        RunConfig(models=(entry,), cache_dir="")


def test_config_file_models_carry_their_own_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nmodels = ["linear:a weights=zs label=zero", "linear:a weights=ft label=tuned"]\nshifts = ["toy"]\n')
    config = resolve({}, path)
    assert config.model_specs() == [("linear:a", {"weights": "zs", "label": "zero"}), ("linear:a", {"weights": "ft", "label": "tuned"})]


def test_two_checkpoints_of_one_architecture_in_one_run(tmp_path, data):
    run_dir = tmp_path / "run"
    args = ["run", "--model", "linear:net", "--model-arg", "weights=zs", "--model-arg", "label=zero",
            "--model", "linear:net", "--model-arg", "weights=ft", "--model-arg", "label=tuned", "--shifts", "toy"]  # fmt: skip
    assert main([*args, *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    assert sorted(r.model for r in store.read_results()) == ["tuned", "zero"]
    _, rgb = mean_rgb(data, "toy")
    for label, key in (("zero", "zs"), ("tuned", "ft")):
        weight, bias = (np.asarray(x, dtype=np.float64) for x in LINEAR_WEIGHTS[key])
        preds = Predictions.load(store.predictions_path(label, "toy"))
        np.testing.assert_allclose(preds.logits.astype(np.float64), rgb @ weight.T + bias, atol=2e-3)


def test_two_models_that_would_share_a_name_are_refused_before_anything_runs(tmp_path, data, capsys):
    run_dir = tmp_path / "run"
    args = ["run", "--model", "linear:net", "--model-arg", "weights=zs", "--model", "linear:net", "--model-arg", "weights=ft", "--shifts", "toy"]
    assert main([*args, *engine_flags(data, run_dir)]) == 2
    assert "label=NAME" in capsys.readouterr().err
    assert not (run_dir / "results.jsonl").exists()


def test_wiseft_endpoints_take_their_own_checkpoints(tmp_path, data):
    run_dir = tmp_path / "wiseft"
    args = ["wiseft", "--zeroshot", "linear:net", "--zeroshot-arg", "weights=zs", "--finetuned", "linear:net",
            "--finetuned-arg", "weights=ft", "--alphas", "0,0.5,1", "--shifts", "toy"]  # fmt: skip
    assert main([*args, *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    _, rgb = mean_rgb(data, "toy")
    (zw, zb), (fw, fb) = ((np.asarray(w), np.asarray(b)) for w, b in (LINEAR_WEIGHTS["zs"], LINEAR_WEIGHTS["ft"]))
    from harness.engine.sweeps import wiseft_name

    for alpha in (0.0, 0.5, 1.0):
        name = wiseft_name(alpha, ("linear:net", {"weights": "zs"}), ("linear:net", {"weights": "ft"}))
        preds = Predictions.load(store.predictions_path(name, "toy"))
        want = rgb @ ((1 - alpha) * zw + alpha * fw).T + (1 - alpha) * zb + alpha * fb
        np.testing.assert_allclose(preds.logits.astype(np.float64), want, atol=2e-3)
    row = store.read_results()[0]
    assert row.provenance["model"]["zeroshot_options"] == {"weights": "zs"}
    assert row.provenance["model"]["finetuned_options"] == {"weights": "ft"}
