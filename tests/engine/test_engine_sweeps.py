"""WiSE-FT alphas and soups run as ordinary cells: merged weights give exactly merged logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import LINEAR_WEIGHTS, engine_flags, mean_rgb, registered, write_toy_data
from safetensors.torch import save_file

from harness.api import Predictions
from harness.cli import main
from harness.engine.store import RunDir


@pytest.fixture
def data(tmp_path: Path):
    with registered():
        yield write_toy_data(tmp_path / "data")


def expected_logits(data: Path, weight, bias) -> np.ndarray:
    _, rgb = mean_rgb(data, "toy")
    return rgb @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, dtype=np.float64)


def test_wiseft_makes_one_cell_per_alpha_with_interpolated_weights(tmp_path, data, capsys):
    run_dir = tmp_path / "wiseft"
    args = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:ft", "--alphas", "0:1:0.5", "--shifts", "toy"]
    assert main([*args, *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    rows = store.read_results()
    assert [r.model for r in rows] == ["wiseft(alpha=0)", "wiseft(alpha=0.5)", "wiseft(alpha=1)"]
    zs, ft = (np.asarray(LINEAR_WEIGHTS[k][0]) for k in ("zs", "ft"))
    zb, fb = (np.asarray(LINEAR_WEIGHTS[k][1]) for k in ("zs", "ft"))
    for alpha in (0.0, 0.5, 1.0):
        preds = Predictions.load(store.predictions_path(f"wiseft(alpha={alpha:g})", "toy"))
        want = expected_logits(data, (1 - alpha) * zs + alpha * ft, (1 - alpha) * zb + alpha * fb)
        np.testing.assert_allclose(preds.logits.astype(np.float64), want, atol=2e-3)
    assert rows[1].provenance["model"]["alpha"] == 0.5
    assert rows[1].provenance["model"]["zeroshot"] == "linear:zs"
    # each alpha records the hash of the weights it loaded, not the fine-tuned endpoint's
    from models.checkpoints import state_dict_sha256

    for row, alpha in zip(rows, (0.0, 0.5, 1.0), strict=True):
        w = (1 - alpha) * torch.tensor(LINEAR_WEIGHTS["zs"][0]) + alpha * torch.tensor(LINEAR_WEIGHTS["ft"][0])
        b = (1 - alpha) * torch.tensor(LINEAR_WEIGHTS["zs"][1]) + alpha * torch.tensor(LINEAR_WEIGHTS["ft"][1])
        assert row.provenance["model"]["weights_sha256"] == state_dict_sha256({"fc.weight": w, "fc.bias": b})

    # Rerunning with a finer grid predicts only the new alphas.
    capsys.readouterr()
    assert main([*args[:-4], "--alphas", "0:1:0.25", "--shifts", "toy", *engine_flags(data, run_dir)]) == 0
    table = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] + " " + line.split()[-1] for line in table] == [
        "wiseft(alpha=0) skipped", "wiseft(alpha=0.25) new", "wiseft(alpha=0.5) skipped", "wiseft(alpha=0.75) new", "wiseft(alpha=1) skipped",
    ]  # fmt: skip


def save_ingredient(path: Path, weight, bias) -> Path:
    save_file({"fc.weight": torch.tensor(weight, dtype=torch.float32), "fc.bias": torch.tensor(bias, dtype=torch.float32)}, str(path))
    return path


def test_uniform_soup_averages_every_ingredient(tmp_path, data):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    ws = [LINEAR_WEIGHTS["zs"], LINEAR_WEIGHTS["ft"], ([[2.0, 0, 0], [0, 2, 0], [0, 0, 2], [0, 0, 0]], [0.0, 0, 0, 1])]
    for i, (w, b) in enumerate(ws):
        save_ingredient(folder / f"m{i}.safetensors", w, b)
    run_dir = tmp_path / "soup"
    assert main(["soup", "--model", "linear:zs", "--ingredients", str(folder), "--recipe", "uniform", "--shifts", "toy", *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    (row,) = store.read_results()
    assert row.model == "soup(uniform)"
    assert [Path(p).name for p in row.provenance["model"]["ingredients"]] == ["m0.safetensors", "m1.safetensors", "m2.safetensors"]
    preds = Predictions.load(store.predictions_path("soup(uniform)", "toy"))
    w = np.mean([np.asarray(w) for w, _ in ws], axis=0)
    b = np.mean([np.asarray(b) for _, b in ws], axis=0)
    np.testing.assert_allclose(preds.logits.astype(np.float64), expected_logits(data, w, b), atol=2e-3)


def toy_top1(data: Path, weight, bias) -> float:
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    return float((expected_logits(data, weight, bias).argmax(1) == labels).mean())


def test_greedy_soup_selects_on_held_out_data_and_records_its_decisions(tmp_path, data):
    # Red-only linear detectors; individually a 1/8, b 3/8, c 2/8, d 2/8. Greedy order b, c, d, a:
    # b+c and b+d score 3/8 (not strictly better: rejected), b+a scores 4/8 (accepted).
    ws = {
        "a": ([[-2.0, 0, 0], [-3.6, 0, 0], [2.4, 0, 0], [3.6, 0, 0]], [-0.3, 1.5, 0.9, -1.3]),
        "b": ([[-6.0, 0, 0], [2.0, 0, 0], [-6.4, 0, 0], [0.8, 0, 0]], [-0.6, 0.0, 0.7, -0.3]),
        "c": ([[-0.8, 0, 0], [7.6, 0, 0], [-1.2, 0, 0], [5.2, 0, 0]], [-0.4, 0.1, 0.2, -0.2]),
        "d": ([[2.0, 0, 0], [1.2, 0, 0], [-2.0, 0, 0], [-2.8, 0, 0]], [0.3, -0.7, -0.2, -0.9]),
    }
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name, (w, b) in ws.items():
        save_ingredient(folder / f"{name}.safetensors", w, b)
    scores = {n: toy_top1(data, *wb) for n, wb in ws.items()}
    # The greedy rule, re-derived here from independently computed accuracies.
    order = sorted(ws, key=lambda n: -scores[n])
    kept, best = [order[0]], scores[order[0]]
    for n in order[1:]:
        cand = [ws[k] for k in [*kept, n]]
        s = toy_top1(data, np.mean([np.asarray(w) for w, _ in cand], 0), np.mean([np.asarray(b) for _, b in cand], 0))
        if s > best:
            kept, best = [*kept, n], s

    run_dir = tmp_path / "greedy"
    base = ["soup", "--model", "linear:zs", "--ingredients", str(folder), "--recipe", "greedy", "--shifts", "toy-sub", *engine_flags(data, run_dir)]
    assert main(base) == 2  # greedy without --held-out
    assert main([*base, "--held-out", "toy"]) == 2  # toy is toy-sub's ID reference: reported
    assert main([*base, "--held-out", "toy-heldout"]) == 0
    record = json.loads((run_dir / "soups" / "greedy.json").read_text())
    assert order == ["b", "c", "d", "a"] and kept == ["b", "a"]
    assert record["order"] == order
    assert record["accepted"] == kept
    assert record["individual_scores"] == pytest.approx(scores)
    rows = {(r.model, r.setting) for r in RunDir(run_dir).read_results()}
    assert ("soup(greedy)", "toy-sub") in rows and ("soup(greedy)", "toy") in rows
    assert {s for m, s in rows if m.startswith(("ingredient(", "candidate("))} == {"toy-heldout"}


def test_wiseft_cells_are_tagged_as_what_they_are():
    from harness.engine.sweeps import wiseft_tags

    zs, ft = ["clip", "zero-shot"], ["clip", "fine-tuned", "in1k"]
    assert wiseft_tags(zs, ft, 0.0) == ["clip", "zero-shot"]  # the zero-shot model itself
    assert wiseft_tags(zs, ft, 1.0) == ["clip", "fine-tuned", "in1k"]
    assert wiseft_tags(zs, ft, 0.3) == ["clip", "in1k", "wise-ft"]


def test_soup_ingredients_saved_under_a_prefix_load_under_the_models_names(tmp_path, data):
    """Model soups save ``model.*`` (with the text tower), WiSE-FT ``image_encoder.model.*``: each
    ingredient is read under the base model's names, extra keys left out."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    ws = [LINEAR_WEIGHTS["zs"], LINEAR_WEIGHTS["ft"]]
    for i, (w, b) in enumerate(ws):
        prefix = ("model.", "image_encoder.model.")[i]
        save_file({f"{prefix}fc.weight": torch.tensor(w), f"{prefix}fc.bias": torch.tensor(b),
                   f"{prefix}text.weight": torch.ones(2)}, str(folder / f"m{i}.safetensors"))  # fmt: skip
    run_dir = tmp_path / "soup"
    assert main(["soup", "--model", "linear:zs", "--ingredients", str(folder), "--shifts", "toy", *engine_flags(data, run_dir)]) == 0
    preds = Predictions.load(RunDir(run_dir).predictions_path("soup(uniform)", "toy"))
    w = np.mean([np.asarray(w) for w, _ in ws], axis=0)
    b = np.mean([np.asarray(b) for _, b in ws], axis=0)
    np.testing.assert_allclose(preds.logits.astype(np.float64), expected_logits(data, w, b), atol=2e-3)


def test_an_ingredient_of_another_architecture_is_a_one_line_error(tmp_path, data, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_ingredient(folder / "m0.safetensors", *LINEAR_WEIGHTS["zs"])
    save_file({"a.fc.weight": torch.zeros(4, 3), "b.fc.weight": torch.zeros(4, 3), "fc.bias": torch.zeros(4)},
              str(folder / "m1.safetensors"))  # fmt: skip
    run_dir = tmp_path / "soup"
    assert main(["soup", "--model", "linear:zs", "--ingredients", str(folder), "--shifts", "toy", *engine_flags(data, run_dir)]) == 2
    assert (
        f"{folder / 'm1.safetensors'}: 2 parameters (a.fc.weight, b.fc.weight) for the model's 'fc.weight'; "
        "soup ingredients must be checkpoints of the --model architecture"
    ) in capsys.readouterr().err


def test_a_soup_base_without_weights_is_built_from_the_first_ingredient(tmp_path):
    from harness.config import RunConfig
    from harness.engine.sweeps import soup_sources

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i in range(2):
        save_ingredient(folder / f"m{i}.safetensors", *LINEAR_WEIGHTS["zs"])
    config = RunConfig(models=("finetuned:ViT-B-32",), shifts=("toy",), cache_dir="")
    (source,) = soup_sources([str(folder)], "uniform", None, config)
    assert json.loads(source.identity)["options"] == {"weights": str(folder / "m0.safetensors")}
    own = RunConfig(models=("finetuned:ViT-B-32 weights=/ckpt/base.pt",), shifts=("toy",), cache_dir="")
    (source,) = soup_sources([str(folder)], "uniform", None, own)
    assert json.loads(source.identity)["options"] == {"weights": "/ckpt/base.pt"}
