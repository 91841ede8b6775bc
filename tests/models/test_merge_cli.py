import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from harness.cli import main
from models.checkpoints import save_safetensors
from models.merging import GreedySoupRecord, GreedyStep


def _sd(seed):
    g = torch.Generator().manual_seed(seed)
    return {"model.visual.w": torch.randn(3, 2, generator=g), "classification_head.weight": torch.randn(4, 2, generator=g)}


def test_wiseft_merge_writes_the_interpolation_with_provenance(tmp_path, capsys):
    torch.save(_sd(0), tmp_path / "zs.pt")
    save_safetensors(_sd(1), tmp_path / "ft.safetensors")
    out = tmp_path / "wiseft.safetensors"
    assert main(["merge", "--method", "wiseft", "--alpha", "0.25", "--out", str(out),
                 str(tmp_path / "zs.pt"), str(tmp_path / "ft.safetensors")]) == 0
    merged = load_file(str(out))
    for k in _sd(0):
        assert torch.equal(merged[k], 0.75 * _sd(0)[k] + 0.25 * _sd(1)[k])
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert meta["method"] == "wiseft" and meta["alpha"] == "0.25" and meta["dtype"] == "fp32"
    assert [i["path"] for i in json.loads(meta["ingredients"])] == [str(tmp_path / "zs.pt"), str(tmp_path / "ft.safetensors")]
    assert "sha256" in capsys.readouterr().out
    assert main(["merge", "--method", "wiseft", "--alpha", "0.5", "--encoder-only", "--dtype", "bf16", "--out",
                 str(out), str(tmp_path / "zs.pt"), str(tmp_path / "ft.safetensors")]) == 0
    patched = load_file(str(out))
    assert patched["classification_head.weight"].dtype == torch.bfloat16
    assert torch.equal(patched["classification_head.weight"], _sd(0)["classification_head.weight"].bfloat16())


def test_uniform_and_greedy_soups_from_a_folder(tmp_path):
    soup_dir = tmp_path / "ingredients"
    for i in range(3):
        save_safetensors(_sd(i), soup_dir / f"model_{i}.safetensors")
    out = tmp_path / "uniform.safetensors"
    assert main(["merge", "--method", "uniform", "--out", str(out), str(soup_dir)]) == 0
    expected = (_sd(0)["model.visual.w"].double() + _sd(1)["model.visual.w"].double() + _sd(2)["model.visual.w"].double()) / 3
    assert torch.equal(load_file(str(out))["model.visual.w"], expected.float())
    record = GreedySoupRecord("imagenet-heldout", ["model_2.safetensors", "model_0.safetensors", "model_1.safetensors"],
                              {"model_0.safetensors": 0.5, "model_1.safetensors": 0.4, "model_2.safetensors": 0.6},
                              [GreedyStep("model_2.safetensors", 0.6, True, 0.6),
                               GreedyStep("model_0.safetensors", 0.65, True, 0.65),
                               GreedyStep("model_1.safetensors", 0.6, False, 0.65)])
    record.save(tmp_path / "greedy.json")
    out = tmp_path / "greedy.safetensors"
    assert main(["merge", "--method", "greedy", "--selection", str(tmp_path / "greedy.json"), "--out", str(out),
                 str(soup_dir)]) == 0
    expected = (_sd(2)["model.visual.w"].double() + _sd(0)["model.visual.w"].double()) / 2
    assert torch.equal(load_file(str(out))["model.visual.w"], expected.float())


def test_bad_merges_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    torch.save(_sd(0), tmp_path / "a.pt")
    torch.save({"other": torch.zeros(1)}, tmp_path / "b.pt")
    out = tmp_path / "m.safetensors"
    cases = [
        (["--method", "wiseft", "--alpha", "0.5", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")], "no parameter for 'model.visual.w'"),
        (["--method", "wiseft", str(tmp_path / "a.pt"), str(tmp_path / "a.pt")], "needs --alpha"),
        (["--method", "wiseft", "--alpha", "0.5", str(tmp_path / "a.pt")], "exactly two checkpoints"),
        (["--method", "uniform", "--alpha", "0.5", str(tmp_path / "a.pt")], "apply to --method wiseft"),
        (["--method", "greedy", str(tmp_path / "a.pt")], "needs --selection"),
    ]
    for argv, message in cases:
        assert main(["merge", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["merge", "--method", "uniform", "--out", str(tmp_path / "m.pt"), str(tmp_path / "a.pt")]) == 2
    assert "*.safetensors" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_a_greedy_record_of_tiny_clip_ingredients_rebuilds_the_same_soup(tiny_arch, tmp_path):
    """model-soups ingredients (``model.*`` + head, torch and safetensors files): the record names
    each by file name and sha256, and `merge --method greedy` on it equals merging the accepted list."""
    from tiny_clip import TINY_CLIP, make_clip

    from models.merging import greedy_soup
    from models.soups import ingredient_entry, list_ingredients

    folder = tmp_path / "ingredients"
    folder.mkdir()
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        state = {f"model.{k}": v for k, v in make_clip(tiny_arch, i).state_dict().items()}
        state |= {"classification_head.weight": torch.randn(4, TINY_CLIP["embed_dim"], generator=g),
                  "classification_head.bias": torch.randn(4, generator=g)}
        torch.save(state, folder / f"model_{i}.pt") if i % 2 else save_safetensors(state, folder / f"model_{i}.safetensors")
    files = list_ingredients(str(folder))
    names = {f.name: f for f in files}
    scores = iter([0.9, 0.7])  # model_2 + model_1 improves, + model_0 does not
    _, record = greedy_soup({n: str(f) for n, f in names.items()},
                            {"model_0.safetensors": 0.5, "model_1.pt": 0.6, "model_2.safetensors": 0.8},
                            lambda s: next(scores), "imagenet-heldout",
                            entries={n: ingredient_entry(f) for n, f in names.items()})
    record.save(tmp_path / "greedy.json")
    assert record.accepted == ["model_2.safetensors", "model_1.pt"]
    saved = json.loads((tmp_path / "greedy.json").read_text())
    assert saved["ingredients"]["model_1.pt"]["file"] == "model_1.pt" and len(saved["ingredients"]["model_1.pt"]["sha256"]) == 64
    assert main(["merge", "--method", "greedy", "--selection", str(tmp_path / "greedy.json"),
                 "--out", str(tmp_path / "greedy.safetensors"), str(folder)]) == 0
    assert main(["merge", "--method", "uniform", "--out", str(tmp_path / "list.safetensors"),
                 str(folder / "model_2.safetensors"), str(folder / "model_1.pt")]) == 0
    a, b = load_file(str(tmp_path / "greedy.safetensors")), load_file(str(tmp_path / "list.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (folder / "model_1.pt").write_bytes(b"changed")  # another file under the accepted name: refused
    assert main(["merge", "--method", "greedy", "--selection", str(tmp_path / "greedy.json"),
                 "--out", str(tmp_path / "x.safetensors"), str(folder)]) == 2


def test_merge_wiseft_takes_the_pairs_the_wiseft_model_takes(tiny_arch, tmp_path):
    """A model-soups zero-shot (``model.*``) and a WiSE-FT fine-tune (``image_encoder.model.*``):
    the `wiseft` model accepts the pair, and so does `merge`, with the same weights."""
    from tiny_clip import TINY_CLIP, images, make_clip

    from models.clip import finetuned
    from models.wiseft import wiseft

    g = torch.Generator().manual_seed(0)
    head = {"classification_head.weight": torch.randn(4, TINY_CLIP["embed_dim"], generator=g),
            "classification_head.bias": torch.randn(4, generator=g)}
    zs = {f"model.{k}": v for k, v in make_clip(tiny_arch, 1).state_dict().items()} | head
    ft = {f"image_encoder.model.{k}": v for k, v in make_clip(tiny_arch, 2).state_dict().items()}
    ft |= {k: v + 1 for k, v in head.items()}
    save_safetensors(zs, tmp_path / "zs.safetensors")
    torch.save(ft, tmp_path / "ft.pt")
    out = tmp_path / "half.safetensors"
    assert main(["merge", "--method", "wiseft", "--alpha", "0.5", "--out", str(out),
                 str(tmp_path / "zs.safetensors"), str(tmp_path / "ft.pt")]) == 0
    x = images(2)
    model = wiseft(tiny_arch, zeroshot=str(tmp_path / "zs.safetensors"), finetuned=str(tmp_path / "ft.pt"),
                   alpha="0.5", label_space="toy-4")
    merged = finetuned(tiny_arch, weights=str(out), label_space="toy-4")
    assert torch.equal(model.logits(x), merged.logits(x))


def test_merging_checkpoints_that_say_different_activations_is_refused(tmp_path, monkeypatch, capsys):
    from models.checkpoints import file_sha256
    from models.releases import EXTRA, Release

    torch.save(_sd(0), tmp_path / "a.pt")
    torch.save(_sd(1), tmp_path / "b.pt")
    for name, act in (("a.pt", "quickgelu"), ("b.pt", "gelu")):
        sha = file_sha256(tmp_path / name)
        monkeypatch.setitem(EXTRA, sha, Release("ViT-B-32", name, sha, act, f"clip:ViT-B-32@{name}"))
    out = tmp_path / "m.safetensors"
    assert main(["merge", "--method", "uniform", "--out", str(out), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert "different activations cannot be merged" in err and "a.pt" in err and "b.pt" in err
    assert not out.exists()


def test_merge_wiseft_refuses_a_zero_shot_checkpoint_without_its_head(tmp_path, capsys):
    """Plain CLIP weights have no head to interpolate: the error says so and names the way out."""
    torch.save({"visual.w": torch.zeros(3, 2), "ln_final.bias": torch.zeros(2)}, tmp_path / "clip.pt")
    save_safetensors(_sd(1), tmp_path / "ft.safetensors")
    out = tmp_path / "m.safetensors"
    assert main(["merge", "--method", "wiseft", "--alpha", "0.5", "--out", str(out),
                 str(tmp_path / "clip.pt"), str(tmp_path / "ft.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "clip.pt: no classification_head.weight" in err and "shiftbench wiseft" in err and err.count("\n") == 1
    assert not out.exists()
