"""WiSE-FT alphas and soups run as ordinary cells: merged weights give exactly merged logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import LINEAR_WEIGHTS, engine_flags, mean_rgb
from safetensors.torch import save_file

from harness.api import Predictions
from harness.cli import main
from harness.engine.store import RunDir


def expected_logits(data: Path, weight, bias) -> np.ndarray:
    _, rgb = mean_rgb(data, "toy")
    return rgb @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, dtype=np.float64)


def test_wiseft_makes_one_cell_per_alpha_with_interpolated_weights(tmp_path, data, capsys):
    run_dir = tmp_path / "wiseft"
    args = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:ft", "--alphas", "0:1:0.5", "--shifts", "toy"]
    assert main([*args, *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    rows = store.read_results()
    name = wiseft_label("zs", "ft")
    assert [r.model for r in rows] == [name(0), name(0.5), name(1)]
    zs, ft = (np.asarray(LINEAR_WEIGHTS[k][0]) for k in ("zs", "ft"))
    zb, fb = (np.asarray(LINEAR_WEIGHTS[k][1]) for k in ("zs", "ft"))
    for alpha in (0.0, 0.5, 1.0):
        preds = Predictions.load(store.predictions_path(name(alpha), "toy"))
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
    assert [line.split()[-1] for line in table] == ["skipped", "new", "skipped", "new", "skipped"]
    assert [line.startswith(name(a)) for a, line in zip((0, 0.25, 0.5, 0.75, 1), table, strict=True)] == [True] * 5


def wiseft_label(zs: str, ft: str):
    """The default name of a WiSE-FT cell of the linear doubles ``zs`` and ``ft``, by alpha."""
    from harness.engine.sweeps import wiseft_name

    return lambda alpha: wiseft_name(alpha, (f"linear:{zs}", {}), (f"linear:{ft}", {}))


def test_two_wiseft_sweeps_of_different_checkpoints_get_different_names(tmp_path, data):
    """Names carry the architecture and both endpoints' weights hashes, stable across runs."""
    from harness.engine.sweeps import wiseft_name

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    paths = [save_ingredient(ckpts / f"ft{i}.safetensors", *LINEAR_WEIGHTS[k]) for i, k in enumerate(("ft", "zs"))]
    run_dir = tmp_path / "two"
    for path in paths:
        args = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:ft", "--finetuned-arg", f"weights={path}",
                "--alphas", "0.5", "--shifts", "toy"]
        assert main([*args, *engine_flags(data, run_dir)]) == 0
    names = [r.model for r in RunDir(run_dir).read_results()]
    assert len(names) == 2 and names[0] != names[1]
    from models.checkpoints import file_sha256

    for name, path in zip(names, paths, strict=True):
        assert name.startswith("wiseft:zs[zs ") and f",ft {file_sha256(path)[:8]}](alpha=0.5)" in name
    assert names[0] == wiseft_name(0.5, ("linear:zs", {}), ("linear:ft", {"weights": str(paths[0])}))  # stable


def save_ingredient(path: Path, weight, bias) -> Path:
    save_file({"fc.weight": torch.tensor(weight, dtype=torch.float32), "fc.bias": torch.tensor(bias, dtype=torch.float32)}, str(path))
    return path


def test_uniform_soup_averages_every_ingredient(tmp_path, data, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    ws = [LINEAR_WEIGHTS["zs"], LINEAR_WEIGHTS["ft"], ([[2.0, 0, 0], [0, 2, 0], [0, 0, 2], [0, 0, 0]], [0.0, 0, 0, 1])]
    for i, (w, b) in enumerate(ws):
        save_ingredient(folder / f"m{i}.safetensors", w, b)
    run_dir = tmp_path / "soup"
    # --held-out only steers the greedy recipe: with the uniform one it would be ignored
    assert main(["soup", "--model", "linear:zs", "--ingredients", str(folder), "--held-out", "toy-heldout",
                 "--shifts", "toy", *engine_flags(data, run_dir)]) == 2
    assert "uniform soup (the default recipe) averages every ingredient and would not use it" in capsys.readouterr().err
    assert not (run_dir / "results.jsonl").exists()
    assert main(["soup", "--model", "linear:zs", "--ingredients", str(folder), "--recipe", "uniform", "--shifts", "toy", *engine_flags(data, run_dir)]) == 0
    store = RunDir(run_dir)
    (row,) = store.read_results()
    assert row.model.startswith("soup:zs[") and row.model.endswith("](uniform,n=3)")
    assert [i["file"] for i in row.provenance["model"]["ingredients"]] == ["m0.safetensors", "m1.safetensors", "m2.safetensors"]
    preds = Predictions.load(store.predictions_path(row.model, "toy"))
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
    files = [f"{n}.safetensors" for n in order]
    assert record["order"] == files
    assert record["accepted"] == [f"{n}.safetensors" for n in kept]
    assert record["individual_scores"] == pytest.approx({f"{n}.safetensors": v for n, v in scores.items()})
    from models.checkpoints import file_sha256

    assert record["ingredients"]["a.safetensors"]["sha256"] == file_sha256(folder / "a.safetensors")
    rows = {(r.model, r.setting) for r in RunDir(run_dir).read_results()}
    (greedy,) = {m for m, _ in rows if m.startswith("soup:")}
    assert greedy.endswith("(greedy,n=2)") and (greedy, "toy-sub") in rows and (greedy, "toy") in rows
    assert {s for m, s in rows if m.startswith(("ingredient:", "candidate:"))} == {"toy-heldout"}

    # `merge --method greedy` takes what `soup` wrote: bit-identical to merging the accepted list,
    # even after the ingredients are moved and renamed (the record names them by sha256 too).
    from safetensors.torch import load_file

    out = tmp_path / "merged"
    assert main(["merge", "--method", "greedy", "--selection", str(run_dir / "soups" / "greedy.json"),
                 "--out", str(out / "greedy.safetensors"), str(folder)]) == 0
    assert main(["merge", "--method", "uniform", "--out", str(out / "accepted.safetensors"),
                 *[str(folder / f"{n}.safetensors") for n in kept]]) == 0
    greedy_w, accepted_w = load_file(str(out / "greedy.safetensors")), load_file(str(out / "accepted.safetensors"))
    assert greedy_w.keys() == accepted_w.keys() and all(torch.equal(greedy_w[k], accepted_w[k]) for k in greedy_w)
    moved = tmp_path / "moved"
    folder.rename(moved)
    (moved / "b.safetensors").rename(moved / "renamed.safetensors")
    assert main(["merge", "--method", "greedy", "--selection", str(run_dir / "soups" / "greedy.json"),
                 "--out", str(out / "again.safetensors"), str(moved)]) == 0
    again = load_file(str(out / "again.safetensors"))
    assert all(torch.equal(again[k], accepted_w[k]) for k in accepted_w)


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
    (row,) = RunDir(run_dir).read_results()
    preds = Predictions.load(RunDir(run_dir).predictions_path(row.model, "toy"))
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
        f"{folder / 'm1.safetensors'}: 2 parameters (a.fc.weight, b.fc.weight) for 'fc.weight'; "
        "ingredients must be checkpoints of the same architecture"
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


def test_merged_weights_are_hashed_once_per_alpha_not_once_per_cell(tmp_path, data, monkeypatch):
    """Each cell records the merged weights' hash; hashing is done once per alpha (on the CPU
    copy being loaded), not once per shift (a device-to-host copy of the model each time)."""
    import models.checkpoints as ck

    calls = []
    real = ck.state_dict_sha256
    monkeypatch.setattr(ck, "state_dict_sha256", lambda state: calls.append(1) or real(state))
    args = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:ft", "--alphas", "0,1", "--shifts", "toy,toy-sub"]
    assert main([*args, *engine_flags(data, tmp_path / "run")]) == 0
    assert len(calls) == 2, f"{len(calls)} full-model hashes for 2 alphas"
    rows = RunDir(tmp_path / "run").read_results()
    assert len({r.provenance["model"]["weights_sha256"] for r in rows}) == 2  # per alpha, every setting


def test_greedy_soup_selection_joins_the_torchrun_world(tmp_path, data, monkeypatch):
    """The held-out selection Engine runs in the world the run joined (not World.single on every rank)."""
    from doubles import toy_config

    import harness.engine.sweeps as sweeps
    from harness.engine.distributed import World

    seen = {}

    class SpyEngine:
        def __init__(self, config, **kw):
            seen.update(kw)
            raise RuntimeError("stop")

    monkeypatch.setattr(sweeps, "Engine", SpyEngine)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in "ab":
        save_file({"fc.weight": torch.zeros(4, 3), "fc.bias": torch.zeros(4)}, str(folder / f"{name}.safetensors"))
    config = toy_config(data, models=("linear:zs",), shifts=("toy-sub",), run_dir=str(tmp_path / "run"))
    world = World(1, 2)
    with pytest.raises(RuntimeError, match="stop"):
        sweeps.soup_sources([str(folder)], "greedy", "toy-heldout", config, world=world)
    assert seen.get("world") is world
    monkeypatch.setenv("WORLD_SIZE", "1")
    seen.clear()
    with pytest.raises(RuntimeError, match="stop"):
        sweeps.soup_sources([str(folder)], "greedy", "toy-heldout", config)
    assert seen.get("world") == World.single()  # from the environment, as `shiftbench run` joins it


def test_wiseft_endpoint_copies_stay_on_the_cpu_whatever_the_models_device(monkeypatch):
    """The two endpoint state dicts kept for every alpha are CPU copies, so a model on a GPU
    holds its weights once on the device, not three times. Without a GPU: the endpoints go
    through ``cpu_copy``, which copies CPU tensors and moves device tensors to the CPU (a
    ``meta`` tensor, having no data, cannot be moved: proof that it is not kept in place)."""
    from doubles import LinearNet

    import harness.engine.sweeps as sweeps

    built, copied = [], []
    real_copy = sweeps.cpu_copy

    def build(spec, options):
        built.append(LinearNet(*LINEAR_WEIGHTS[spec.partition(":")[2]], name=spec))
        return built[-1]

    monkeypatch.setattr(sweeps, "_build", build)
    monkeypatch.setattr(sweeps, "cpu_copy", lambda state: copied.append(set(state)) or real_copy(state))
    _, (zs, ft) = sweeps.WiseFT(("linear:zs", {}), ("linear:ft", {}))._endpoints()
    assert copied == [{"fc.weight", "fc.bias"}] * 2
    assert {t.device.type for t in (*zs.values(), *ft.values())} == {"cpu"}
    assert all(zs[k].data_ptr() != v.data_ptr() for k, v in built[0].state_dict().items())  # copies, not views
    with pytest.raises(NotImplementedError, match="meta"):
        real_copy({"w": torch.empty(2, device="meta")})


def test_a_label_the_sweeps_would_not_use_is_refused(tmp_path, data, capsys):
    """``label=`` names a model of `shiftbench run`; `wiseft` and `soup` name their cells from the
    architecture and the weights, so the label only entered the cells' identity, silently."""
    run_dir = tmp_path / "sweeps"
    wiseft = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:ft", "--alphas", "0,1", "--shifts", "toy",
              *engine_flags(data, run_dir)]
    for extra in (["--zeroshot-arg", "label=mine"], ["--finetuned-arg", "label=mine"], ["--model-arg", "label=mine"]):
        assert main([*wiseft, *extra]) == 2
        assert "option label=mine names a model of `shiftbench run`; `shiftbench wiseft` names its cells" in capsys.readouterr().err
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i, (w, b) in enumerate([LINEAR_WEIGHTS["zs"], LINEAR_WEIGHTS["ft"]]):
        save_ingredient(folder / f"m{i}.safetensors", w, b)
    assert main(["soup", "--model", "linear:zs", "--model-arg", "label=mine", "--ingredients", str(folder),
                 "--shifts", "toy", *engine_flags(data, run_dir)]) == 2
    assert "drop label=" in capsys.readouterr().err
    assert not (run_dir / "results.jsonl").exists()
    assert main(wiseft) == 0  # without it, as before


def test_one_model_as_both_wiseft_endpoints_is_refused(tmp_path, data, capsys):
    """The same spec and options on both sides (a shared --model-arg weights= is enough) made
    a sweep whose every alpha was that one model, under alpha-named cells."""
    run_dir = tmp_path / "same"
    same = ["wiseft", "--zeroshot", "linear:zs", "--finetuned", "linear:zs", "--alphas", "0,1", "--shifts", "toy",
            *engine_flags(data, run_dir)]
    assert main(same) == 2
    assert "the zero-shot and the fine-tuned endpoint are the same model (linear:zs" in capsys.readouterr().err
    assert main([*same, "--model-arg", "weights=a.pt"]) == 2
    assert not (run_dir / "results.jsonl").exists()


def test_a_soup_base_whose_weights_options_the_ingredients_replace_is_refused(tmp_path, data, capsys):
    """The ingredients' weights, heads included, are loaded over the base model: a ``clip:`` base
    built an 80,000-prompt zero-shot head from its classnames= and templates= only to drop it."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_ingredient(folder / "m0.safetensors", *LINEAR_WEIGHTS["zs"])
    run_dir = tmp_path / "soup"
    for base, what in (("clip:ViT-B-32", "its zero-shot head (classnames=, templates=, scale=)"),
                       ("wiseft:ViT-B-32", "its endpoints and alpha="), ("soup:ViT-B-32", "its ingredients=")):
        assert main(["soup", "--model", base, "--model-arg", "templates=simple-imagenet-7", "--ingredients", str(folder),
                     "--shifts", "toy", *engine_flags(data, run_dir)]) == 2
        assert f"so {what} would not be used; use --model finetuned:ViT-B-32" in capsys.readouterr().err
    assert not (run_dir / "results.jsonl").exists()
