import pytest
import torch
from tiny_clip import TINY_CLIP, images, make_clip

from models.checkpoints import save_safetensors
from models.clip import finetuned
from models.merging import greedy_soup
from models.soups import soup
from models.wiseft import wiseft


def _ingredient(arch, seed):
    """A model-soups layout checkpoint: model.* + classification_head.*"""
    g = torch.Generator().manual_seed(100 + seed)
    head = {"classification_head.weight": torch.randn(4, TINY_CLIP["embed_dim"], generator=g),
            "classification_head.bias": torch.randn(4, generator=g)}
    return {f"model.{k}": v for k, v in make_clip(arch, seed).state_dict().items()} | head


def test_uniform_soup_of_identical_models_is_the_model(tiny_arch, tmp_path):
    state = _ingredient(tiny_arch, 1)
    for i in range(3):
        torch.save(state, tmp_path / f"model_{i}.pt")
    x = images(3)
    s = soup(tiny_arch, ingredients=str(tmp_path), label_space="toy-4")
    one = finetuned(tiny_arch, weights=str(tmp_path / "model_0.pt"), label_space="toy-4")
    assert torch.equal(s.logits(x), one.logits(x))
    d = s.describe()
    assert d["tags"] == ["clip", "fine-tuned", "soup"] and d["recipe"] == "uniform"
    single = soup(tiny_arch, ingredients=str(tmp_path / "model_0.pt"), label_space="toy-4")
    assert single.describe()["weights_sha256"] == d["weights_sha256"]  # the soup is that model
    assert [i["path"] for i in d["ingredients"]] == [str(tmp_path / f"model_{i}.pt") for i in range(3)]


def test_soup_of_two_is_their_midpoint_and_greedy_selection_is_honoured(tiny_arch, tmp_path):
    a, b, c = (_ingredient(tiny_arch, s) for s in (1, 2, 3))
    save_safetensors(a, tmp_path / "a.safetensors")
    save_safetensors(b, tmp_path / "b.safetensors")
    save_safetensors(c, tmp_path / "c.safetensors")
    x = images(2)
    two = soup(tiny_arch, ingredients=f"{tmp_path / 'a.safetensors'},{tmp_path / 'b.safetensors'}", label_space="toy-4")
    mid = wiseft(tiny_arch, zeroshot=str(tmp_path / "a.safetensors"), finetuned=str(tmp_path / "b.safetensors"),
                 alpha="0.5", label_space="toy-4")
    assert torch.allclose(two.logits(x), mid.logits(x), atol=1e-5)
    files = {p.name: str(p) for p in sorted(tmp_path.glob("*.safetensors"))}
    # a scripted held-out evaluator: c+b improves on c alone, c+b+a does not
    scores = iter([0.8, 0.1])
    _, record = greedy_soup(files, {"a.safetensors": 0.5, "b.safetensors": 0.6, "c.safetensors": 0.7},
                            lambda s: next(scores), heldout="imagenet-heldout")
    assert record.accepted == ["c.safetensors", "b.safetensors"]
    record.save(tmp_path / "greedy.json")
    greedy = soup(tiny_arch, ingredients=str(tmp_path), selection=str(tmp_path / "greedy.json"), label_space="toy-4")
    cb = soup(tiny_arch, ingredients=f"{files['c.safetensors']},{files['b.safetensors']}", label_space="toy-4")
    assert torch.equal(greedy.logits(x), cb.logits(x))
    d = greedy.describe()
    assert d["recipe"] == "greedy" and d["greedy"]["accepted"] == ["c.safetensors", "b.safetensors"]
    assert d["greedy"]["heldout"] == "imagenet-heldout"


def test_bad_soups_are_clear_errors(tiny_arch, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        soup(tiny_arch, ingredients=str(tmp_path), label_space="toy-4")
    torch.save(make_clip(tiny_arch, 0).state_dict(), tmp_path / "nohead.pt")
    with pytest.raises(ValueError, match="no classification_head.weight"):
        soup(tiny_arch, ingredients=str(tmp_path), label_space="toy-4")
