import pytest
import torch

from models.checkpoints import save_safetensors
from models.merging import GreedySoupRecord, average, greedy_soup, interpolate


def _sd(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "visual.w": torch.randn(4, 3, generator=g),
        "visual.b": torch.randn(4, generator=g),
        "classification_head.weight": torch.randn(5, 4, generator=g),
        "bn.num_batches_tracked": torch.tensor(seed + 1),
    }


def _bits_equal(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_alpha_endpoints_are_bit_exact_and_half_is_the_manual_average():
    zs, ft = _sd(0), _sd(1)
    zs["visual.b"][0] = -0.0  # signed zeros survive the endpoints too
    ft["visual.b"][1] = -0.0
    at0, at1, half = interpolate(zs, ft, 0.0), interpolate(zs, ft, 1.0), interpolate(zs, ft, 0.5)
    for k in ("visual.w", "visual.b", "classification_head.weight"):
        assert _bits_equal(at0[k], zs[k]) and _bits_equal(at1[k], ft[k])
        assert torch.equal(half[k], 0.5 * zs[k] + 0.5 * ft[k])
    # alpha = 0.3 by hand on one entry (float32 arithmetic, as the reference)
    a, b = zs["visual.w"][1, 2], ft["visual.w"][1, 2]
    assert interpolate(zs, ft, 0.3)["visual.w"][1, 2] == (0.7 * a + 0.3 * b)
    assert int(half["bn.num_batches_tracked"]) == 1  # integer buffers from theta0


def test_encoder_only_interpolation_keeps_the_head():
    zs, ft = _sd(0), _sd(1)
    out = interpolate(zs, ft, 0.5, select=lambda k: k.startswith("visual."))
    assert torch.equal(out["classification_head.weight"], zs["classification_head.weight"])
    assert torch.equal(out["visual.w"], 0.5 * zs["visual.w"] + 0.5 * ft["visual.w"])


def test_interpolation_refuses_mismatches_and_bad_alpha():
    zs, ft = _sd(0), _sd(1)
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate(zs, ft, 1.5)
    other = dict(ft)
    other.pop("visual.b")
    other["visual.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"different parameter names.*missing in .*visual\.b.*only in .*visual\.extra"):
        interpolate(zs, other, 0.5)
    wide = dict(ft, **{"visual.w": torch.zeros(4, 7)})
    with pytest.raises(ValueError, match=r"'visual\.w' has shape \[4, 7\] vs \[4, 3\]"):
        interpolate(zs, wide, 0.5)
    nan = dict(ft, **{"visual.b": torch.full((4,), float("nan"))})
    with pytest.raises(ValueError, match="non-finite"):
        interpolate(zs, nan, 0.5)


def test_uniform_soup_of_identical_models_is_the_model_and_files_stream(tmp_path):
    sd = _sd(3)
    paths = []
    for i in range(3):
        p = tmp_path / f"m{i}.safetensors"
        save_safetensors(sd, p)
        paths.append(p)
    soup = average(paths)
    assert all(_bits_equal(soup[k], sd[k]) for k in ("visual.w", "visual.b", "classification_head.weight"))
    mixed = average([_sd(0), tmp_path / "m0.safetensors"])
    assert torch.allclose(mixed["visual.w"], (_sd(0)["visual.w"] + sd["visual.w"]) / 2, atol=0, rtol=1e-7)


def _one_hot_ingredients(n):
    return {f"m{i}": {"w": torch.nn.functional.one_hot(torch.tensor(i), n).float()} for i in range(n)}


def test_greedy_soup_follows_the_papers_rule():
    ingredients = _one_hot_ingredients(5)
    individual = {"m0": 0.50, "m1": 0.70, "m2": 0.60, "m3": 0.65, "m4": 0.60}
    # held-out accuracy of each candidate soup, keyed by its member set
    script = {
        frozenset({"m1", "m3"}): 0.72,          # improves -> accept
        frozenset({"m1", "m3", "m2"}): 0.72,    # equal -> reject (strictly greater only)
        frozenset({"m1", "m3", "m4"}): 0.74,    # improves -> accept
        frozenset({"m1", "m3", "m4", "m0"}): 0.73,  # worse -> reject
    }
    seen = []

    def evaluate(state):
        members = frozenset(f"m{i}" for i in torch.nonzero(state["w"]).flatten().tolist())
        seen.append(members)
        return script[members]

    soup, record = greedy_soup(ingredients, individual, evaluate, heldout="imagenet-heldout")
    assert record.order == ["m1", "m3", "m2", "m4", "m0"]  # descending; tie m2/m4 keeps given order
    assert [s.accepted for s in record.steps] == [True, True, False, True, False]
    assert record.accepted == ["m1", "m3", "m4"]
    assert [s.best_so_far for s in record.steps] == [0.70, 0.72, 0.72, 0.74, 0.74]
    assert record.final_score == 0.74
    assert seen == list(script)  # one evaluation per candidate, in order
    assert torch.allclose(soup["w"], torch.tensor([0, 1, 0, 1, 1]) / 3.0)


def test_greedy_record_round_trips_and_missing_scores_are_an_error(tmp_path):
    ingredients = _one_hot_ingredients(2)
    _, record = greedy_soup(ingredients, {"m0": 0.1, "m1": 0.2}, lambda s: 0.3, heldout="h")
    record.save(tmp_path / "greedy.json")
    again = GreedySoupRecord.load(tmp_path / "greedy.json")
    assert again.accepted == ["m1", "m0"] and again.order == record.order and again.heldout == "h"
    with pytest.raises(ValueError, match=r"no held-out score for ingredients \['m1'\]"):
        greedy_soup(ingredients, {"m0": 0.1}, lambda s: 0.0, heldout="h")
