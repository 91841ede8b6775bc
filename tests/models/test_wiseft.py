import json

import numpy as np
import pytest
import torch
from tiny_clip import TINY_CLIP, images, make_clip

from harness.api import Predictions
from models.checkpoints import save_safetensors
from models.clip import clip, finetuned
from models.wiseft import interpolate_logits, load_endpoints, parse_alphas, wiseft, wiseft_sweep


def _head(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return {"classification_head.weight": torch.randn(n, TINY_CLIP["embed_dim"], generator=g),
            "classification_head.bias": torch.randn(n, generator=g)}


@pytest.fixture()
def endpoints(tmp_path, tiny_arch, tiny_clip_state):
    """WiSE-FT-layout zero-shot and fine-tuned checkpoints (different encoders and heads)."""
    ft_state = make_clip(tiny_arch, 7).state_dict()
    zs = {f"image_encoder.model.{k}": v for k, v in tiny_clip_state.items()} | _head(0)
    ft = {f"image_encoder.model.{k}": v for k, v in ft_state.items()} | _head(1)
    torch.save(zs, tmp_path / "zeroshot.pt")
    torch.save(ft, tmp_path / "finetuned.pt")
    return str(tmp_path / "zeroshot.pt"), str(tmp_path / "finetuned.pt")


def test_alpha_endpoints_reproduce_the_models_bit_for_bit(tiny_arch, endpoints):
    zs, ft = endpoints
    x = images(3)
    opts = dict(zeroshot=zs, finetuned=ft, label_space="toy-6")
    at0 = wiseft(tiny_arch, alpha="0", **opts)
    at1 = wiseft(tiny_arch, alpha="1", **opts)
    assert torch.equal(at0.logits(x), finetuned(tiny_arch, weights=zs, label_space="toy-6").logits(x))
    assert torch.equal(at1.logits(x), finetuned(tiny_arch, weights=ft, label_space="toy-6").logits(x))
    d = at1.describe()
    assert d["alpha"] == 1.0 and d["tags"] == ["clip", "wise-ft"] and d["mode"] == "full"
    assert [i["role"] for i in d["ingredients"]] == ["zeroshot", "finetuned"]
    assert all(len(i["sha256"]) == 64 for i in d["ingredients"])
    # the merged weights are hashed too: different alphas, different hashes; same alpha, same hash
    assert d["weights_sha256"] != at0.describe()["weights_sha256"]
    assert wiseft(tiny_arch, alpha="1", **opts).describe()["weights_sha256"] == d["weights_sha256"]


def test_half_is_the_manual_average_of_every_parameter_head_included(tiny_arch, endpoints, tiny_clip_state):
    zs, ft = endpoints
    ends, alpha = load_endpoints(tiny_arch, dict(zeroshot=zs, finetuned=ft, label_space="toy-6"))
    assert alpha == 0.5
    merged = ends.weights(0.5)
    ft_state = make_clip(tiny_arch, 7).state_dict()
    for key in ("visual.conv1.weight", "visual.proj", "visual.transformer.resblocks.0.attn.in_proj_weight"):
        assert torch.equal(merged[key], 0.5 * tiny_clip_state[key] + 0.5 * ft_state[key])
    for key, value in _head(0).items():
        assert torch.equal(merged[key], 0.5 * value + 0.5 * _head(1)[key])
    # alphas through a sweep load the endpoints once and agree with single constructions
    x = images(2)
    sweep = list(wiseft_sweep(tiny_arch, [0.25], zeroshot=zs, finetuned=ft, label_space="toy-6"))
    single = wiseft(tiny_arch, alpha="0.25", zeroshot=zs, finetuned=ft, label_space="toy-6")
    assert torch.equal(sweep[0].logits(x), single.logits(x))


def test_zero_shot_endpoint_without_head_gets_the_text_head(tiny_arch, tiny_clip_state, tmp_path):
    torch.save(tiny_clip_state, tmp_path / "clip.pt")  # plain CLIP weights
    ft = {f"model.{k}": v for k, v in make_clip(tiny_arch, 7).state_dict().items()} | _head(1, n=3)
    save_safetensors(ft, tmp_path / "ft.safetensors")
    (tmp_path / "names.txt").write_text("cat\ndog\nmissile\n")
    x = images(2)
    opts = dict(templates="simple-imagenet-7", classnames=str(tmp_path / "names.txt"), label_space="toy-3")
    at0 = wiseft(tiny_arch, alpha="0", zeroshot=str(tmp_path / "clip.pt"), finetuned=str(tmp_path / "ft.safetensors"), **opts)
    zero_shot = clip(tiny_arch, weights=str(tmp_path / "clip.pt"), **opts)
    assert torch.equal(at0.logits(x), zero_shot.logits(x))
    assert at0.label_space == "toy-3" and at0.describe()["head"]["source"] == "zero-shot text tower"


def test_encoder_only_patching_keeps_the_zero_shot_head(tiny_arch, endpoints):
    zs, ft = endpoints
    ends, _ = load_endpoints(tiny_arch, dict(zeroshot=zs, finetuned=ft, mode="encoder", label_space="toy-6"))
    merged = ends.weights(0.7)
    for key, value in _head(0).items():
        assert torch.equal(merged[key], value)
    assert not torch.equal(merged["visual.proj"], ends.zeroshot["visual.proj"])
    assert ends.at(0.7).describe()["tags"] == ["clip", "wise-ft", "patching"]


def test_linear_probe_logit_interpolation_equals_weight_interpolation(tiny_arch, tiny_clip_state, tmp_path):
    # same frozen encoder, different heads: WiSE-FT of a linear classifier
    zs = tiny_clip_state | _head(0)
    ft = tiny_clip_state | _head(1)
    save_safetensors(zs, tmp_path / "zs.safetensors")
    save_safetensors(ft, tmp_path / "ft.safetensors")
    opts = dict(zeroshot=str(tmp_path / "zs.safetensors"), finetuned=str(tmp_path / "ft.safetensors"), label_space="toy-6")
    x = images(5)
    keys = np.array([f"img{i}.jpg" for i in range(5)])
    labels = np.arange(5) % 6

    def preds(clf, order):
        return Predictions(clf.name, "toy", keys[order], labels[order], clf.logits(x).numpy()[order].astype(np.float16))

    p_zs = preds(wiseft(tiny_arch, alpha="0", **opts), np.arange(5))
    p_ft = preds(wiseft(tiny_arch, alpha="1", **opts), np.array([3, 1, 4, 0, 2]))  # stored in another order
    for alpha in (0.3, 0.5):
        by_weights = wiseft(tiny_arch, alpha=str(alpha), **opts).logits(x).numpy()
        by_logits = interpolate_logits(p_zs, p_ft, alpha)
        assert list(by_logits.keys) == list(keys)
        np.testing.assert_allclose(by_logits.logits.astype(np.float32), by_weights, atol=2e-2, rtol=2e-3)
        # and exactly (1 - a) * z + a * f in float32 on the same stored logits, matched by key
        f = p_ft.logits[np.argsort([3, 1, 4, 0, 2])].astype(np.float32)
        manual = (1 - alpha) * p_zs.logits.astype(np.float32) + alpha * f
        assert np.array_equal(by_logits.logits, manual.astype(np.float16))
    assert np.array_equal(interpolate_logits(p_zs, p_ft, 0.0).logits, p_zs.logits)
    bad = Predictions("other", "toy", keys, labels, np.zeros((5, 7), np.float16))
    with pytest.raises(ValueError, match="not the same head"):
        interpolate_logits(p_zs, bad, 0.5)


def test_mismatched_checkpoints_are_refused(tiny_arch, endpoints, tmp_path):
    zs, _ = endpoints
    wide_cfg = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP["vision_cfg"], width=48))
    (tmp_path / "tiny-wide.json").write_text(json.dumps(wide_cfg))
    from models.clip import register_config

    wide = make_clip(register_config(tmp_path / "tiny-wide.json"), 0).state_dict()
    torch.save({f"model.{k}": v for k, v in wide.items()} | _head(1), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="has shape"):
        wiseft(tiny_arch, zeroshot=zs, finetuned=str(tmp_path / "wide.pt"), label_space="toy-6")
    with pytest.raises(ValueError, match=r"option alpha='2'"):
        wiseft(tiny_arch, zeroshot=zs, finetuned=zs, alpha="2", label_space="toy-6")


def test_parse_alphas():
    assert parse_alphas("0:1:0.1") == [round(i / 10, 10) for i in range(11)]
    assert parse_alphas("1,0.5,0,0.5") == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="must be in"):
        parse_alphas("0:2:0.5")
    with pytest.raises(ValueError, match="use START:STOP:STEP"):
        parse_alphas("a:b")


def test_classifiers_expose_checkpoint_names_so_the_engine_can_merge_them(tmp_path, tiny_arch, tiny_clip_state):
    """The engine's `shiftbench wiseft` interpolates the two classifiers' state dicts and loads the
    result into one of them: a zero-shot CLIP head (bias-free) and a fine-tuned classifier must have
    the same parameter names, and the merge must equal `wiseft:` built from the checkpoints."""
    from models.merging import interpolate

    zs_path, ft_path = tmp_path / "zs.safetensors", tmp_path / "ft.safetensors"
    save_safetensors(tiny_clip_state, zs_path)  # plain CLIP weights: no head
    ft_state = {k: v for k, v in make_clip(tiny_arch, 7).state_dict().items() if k.startswith("visual.")}
    save_safetensors(ft_state | _head(1, n=4), ft_path)
    (tmp_path / "names.txt").write_text("cat\ndog\nfish\nbird\n")
    (tmp_path / "templates.txt").write_text("a photo of a {}.\n")
    common = dict(classnames=str(tmp_path / "names.txt"), label_space="toy-4", cache="false")
    zs = clip(tiny_arch, weights=str(zs_path), templates=str(tmp_path / "templates.txt"), **common)
    ft = finetuned(tiny_arch, weights=str(ft_path), label_space="toy-4")
    zs_sd = {k: v.clone() for k, v in zs.state_dict().items()}
    ft_sd = {k: v.clone() for k, v in ft.state_dict().items()}
    assert sorted(zs_sd) == sorted(ft_sd)
    assert {"classification_head.weight", "classification_head.bias"} <= set(zs_sd)
    assert all(k.startswith(("visual.", "classification_head.")) for k in zs_sd)
    assert torch.equal(zs_sd["classification_head.bias"], torch.zeros(4))  # a zero-shot head has no bias
    x = images(3)
    zs_logits, ft_logits = zs.logits(x), ft.logits(x)
    reference = wiseft(tiny_arch, zeroshot=str(zs_path), finetuned=str(ft_path), alpha="0.25",
                       templates=str(tmp_path / "templates.txt"), **common)
    ft.load_state_dict(interpolate(zs_sd, ft_sd, 0.25), strict=True)
    assert torch.allclose(ft.logits(x), reference.logits(x), atol=1e-5)
    ft.load_state_dict(interpolate(zs_sd, ft_sd, 0.0), strict=True)
    assert torch.equal(ft.logits(x), zs_logits)
    ft.load_state_dict(ft_sd, strict=True)
    assert torch.equal(ft.logits(x), ft_logits)


def test_class_names_a_model_would_not_use_are_refused(tiny_arch, endpoints):
    """``classnames=`` was read, so accepted, by models that never build a text head: a fine-tuned
    model and a WiSE-FT whose zero-shot endpoint carries its own head (mode=full). The names did
    nothing but enter the cell's identity, and a 1000-class head lost ImageNet's label space."""
    zs, ft = endpoints
    with pytest.raises(ValueError, match="model finetuned: unknown option 'classnames'"):
        finetuned(tiny_arch, weights=ft, label_space="toy-6", classnames="imagenet-1k")
    with pytest.raises(ValueError, match="carries its own head, which mode=full interpolates.*mode=encoder"):
        wiseft(tiny_arch, zeroshot=zs, finetuned=ft, label_space="toy-6", classnames="imagenet-1k")
    wiseft(tiny_arch, zeroshot=zs, finetuned=ft, label_space="toy-6")  # without it, as before


def test_text_head_options_a_wiseft_would_not_use_are_refused_with_the_reason(tiny_arch, endpoints):
    """``templates``, ``scale``, ``head_bf16`` and ``cache`` only shape a head built from text. With a
    zero-shot endpoint that carries its own head they were refused as unknown options, though
    documented, and under mode=encoder ``templates=`` did not build the head it names."""
    zs, ft = endpoints
    opts = dict(zeroshot=zs, finetuned=ft, label_space="toy-6")
    with pytest.raises(ValueError, match=r"option templates='simple-imagenet-7', scale='100': .*zeroshot.pt carries "
                                         r"its own head, which mode=full interpolates, so no head is built from text "
                                         r"and they would not be used; drop templates=, scale= or pass mode=encoder"):
        wiseft(tiny_arch, templates="simple-imagenet-7", scale="100", **opts)
    with pytest.raises(ValueError, match=r"option cache='false': .* which mode=encoder keeps frozen, .* drop cache= "
                                         r"or pass classnames= \(or templates=\)"):
        wiseft(tiny_arch, mode="encoder", cache="false", **opts)
    # under mode=encoder, templates= alone builds the frozen head from text, with the default class names
    patched = wiseft(tiny_arch, mode="encoder", templates="simple-imagenet-7", cache="false", zeroshot=zs, finetuned=ft)
    head = patched.describe()["head"]
    assert (head["source"], head["templates"], head["classnames"]) == ("zero-shot text tower", "simple-imagenet-7", "imagenet-1k")
    assert patched.num_classes == 1000 and patched.label_space == "imagenet-1k"


def test_a_sweep_refuses_the_alpha_option_it_would_not_use(tiny_arch, endpoints):
    """``wiseft_sweep`` read ``alpha=`` (so accepted it) and built only the alphas it was given."""
    zs, ft = endpoints
    with pytest.raises(ValueError, match=r"option alpha=0.3 would not be used: the sweep builds the alphas it is given"):
        list(wiseft_sweep(tiny_arch, [0.25], zeroshot=zs, finetuned=ft, label_space="toy-6", alpha="0.3"))
