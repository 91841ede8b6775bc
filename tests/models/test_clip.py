import json

import pytest
import torch
import torch.nn.functional as F
from tiny_clip import TINY_CLIP, images, make_clip

from harness.api import Classifier
from models.checkpoints import save_safetensors
from models.clip import clip, finetuned, hf_cached_weights, preprocess_spec_from_open_clip
from models.zeroshot import build_zeroshot_head, encode_text_truncated

NAMES = ["tench", "great white shark", "sunglasses", "sunglasses"]  # duplicates as in OpenAI's list
TEMPLATES = ["a photo of a {}.", "a bad photo of the {}, in a very long and wordy sentence about it."]


@pytest.fixture()
def prompt_files(tmp_path):
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    (tmp_path / "templates.json").write_text(json.dumps([t.replace("{}", "{c}") for t in TEMPLATES]))
    return str(tmp_path / "names.txt"), str(tmp_path / "templates.json")


@pytest.fixture()
def clip_pt(tmp_path, tiny_clip_state):
    path = tmp_path / "tiny-openai.pt"
    # OpenAI-style state dict, with the int entries OpenAI's files carry
    torch.save({**tiny_clip_state, "input_resolution": 32, "context_length": 77, "vocab_size": 49408}, path)
    return path


def _hand_head(model, tokenizer):
    rows = []
    for name in NAMES:
        embs = [F.normalize(model.encode_text(tokenizer([t.format(name)])), dim=-1)[0] for t in TEMPLATES]
        mean = torch.stack(embs).mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def test_zero_shot_head_and_logits_equal_a_hand_computation(tiny_arch, clip_pt, prompt_files):
    import open_clip

    names, templates = prompt_files
    clf = clip(tiny_arch, weights=str(clip_pt), classnames=names, templates=templates, label_space="toy-4")
    assert isinstance(clf, Classifier) and clf.num_classes == 4 and clf.label_space == "toy-4"
    model = make_clip(tiny_arch, 0)
    model.load_state_dict(torch.load(clip_pt, weights_only=True) | {}, strict=False)
    with torch.no_grad():
        head = _hand_head(model, open_clip.get_tokenizer(tiny_arch))
        scale = model.logit_scale.exp()
        assert abs(clf.describe()["head"]["scale"] - float(scale)) < 1e-4  # scale=model (WiSE-FT)
        assert torch.allclose(clf.weight / clf.describe()["head"]["scale"], head, atol=1e-6)
        x = images()
        expected = scale * F.normalize(model.encode_image(x), dim=-1) @ head.T
    assert torch.allclose(clf.logits(x), expected, atol=1e-4)
    # duplicate names give identical rows, never a dict collapse
    assert torch.equal(clf.weight[2], clf.weight[3])


def test_truncated_context_is_exact_and_matches_open_clip(tiny_arch):
    import open_clip

    model = make_clip(tiny_arch, 1)
    tok = open_clip.get_tokenizer(tiny_arch)
    prompts = ["a", "a photo of a tench.", "itap of a very very very long prompt with many many words in it."]
    tokens = tok(prompts)
    with torch.no_grad():
        full = model.encode_text(tokens)
        cut = encode_text_truncated(model, tokens)
        assert tokens.argmax(-1).max() + 1 < tokens.shape[1]  # really truncated
        assert torch.allclose(cut, full, atol=1e-6, rtol=1e-5)
        ours = build_zeroshot_head(model, tok, NAMES, TEMPLATES, batch_size=3, progress=False)
        ref = open_clip.build_zero_shot_classifier(model, tok, NAMES, [lambda c, t=t: t.format(c) for t in TEMPLATES])
    assert torch.allclose(ours, ref.T, atol=1e-6)


def test_head_is_cached_by_weights_names_and_templates(tiny_arch, clip_pt, tmp_path, monkeypatch):
    import models.zeroshot as zs

    first = clip(tiny_arch, weights=str(clip_pt), templates="simple-imagenet-7")
    assert first.describe()["head"]["cache"] == "miss" and first.num_classes == 1000
    assert first.label_space == "imagenet-1k"
    assert len(list((tmp_path / "cache" / "zeroshot-heads").glob("*.safetensors"))) == 1
    calls = []
    monkeypatch.setattr(zs, "build_zeroshot_head", lambda *a, **k: calls.append(1))
    again = clip(tiny_arch, weights=str(clip_pt), templates="simple-imagenet-7")
    assert again.describe()["head"]["cache"] == "hit" and not calls
    assert torch.equal(again.weight, first.weight)
    assert again.describe()["head"]["cache_key"] == first.describe()["head"]["cache_key"]
    monkeypatch.undo()
    monkeypatch.setenv("SHIFTBENCH_CACHE", str(tmp_path / "cache"))
    other = clip(tiny_arch, weights=str(clip_pt), templates="iwildcam-2")
    assert other.describe()["head"]["cache_key"] != first.describe()["head"]["cache_key"]


def test_checkpoint_formats_give_the_same_model(tiny_arch, clip_pt, tiny_clip_state, tmp_path):
    save_safetensors(tiny_clip_state, tmp_path / "tiny.safetensors")
    x = images(2)
    a = clip(tiny_arch, weights=str(clip_pt), templates="simple-imagenet-7", scale="100")
    b = clip(tiny_arch, weights=str(tmp_path / "tiny.safetensors"), templates="simple-imagenet-7", scale="100")
    assert torch.equal(a.logits(x), b.logits(x))
    d = a.describe()
    assert d["tags"] == ["clip", "zero-shot"] and d["head"]["scale"] == 100.0 and len(d["weights_sha256"]) == 64
    assert d["head"]["templates"] == "simple-imagenet-7" and d["head"]["classnames"] == "imagenet-1k"
    assert d["preprocess"]["image_size"] == 32 and d["preprocess"]["interpolation"] == "bicubic"


def _head(seed, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, TINY_CLIP["embed_dim"], generator=g), torch.randn(n, generator=g)


def test_finetuned_reads_wiseft_and_soup_and_plain_layouts(tiny_arch, tiny_clip_state, tmp_path):
    w, b = _head(0)
    head = {"classification_head.weight": w, "classification_head.bias": b}
    # WiSE-FT ImageClassifier (text transformer deleted), model soups ModelWrapper, plain
    wiseft = {f"image_encoder.model.{k}": v for k, v in tiny_clip_state.items() if not k.startswith("transformer.")}
    torch.save({**wiseft, **head}, tmp_path / "wiseft.pt")
    torch.save({**{f"model.{k}": v for k, v in tiny_clip_state.items()}, **head}, tmp_path / "soup.pt")
    save_safetensors({**tiny_clip_state, **head}, tmp_path / "plain.safetensors")
    x = images(3)
    model = make_clip(tiny_arch, 0)
    model.load_state_dict(tiny_clip_state)
    with torch.no_grad():
        expected = F.normalize(model.encode_image(x), dim=-1) @ w.T + b
    for name in ("wiseft.pt", "soup.pt", "plain.safetensors"):
        clf = finetuned(tiny_arch, weights=str(tmp_path / name), label_space="toy-5")
        assert torch.allclose(clf.logits(x), expected, atol=1e-5), name
        assert clf.describe()["tags"] == ["clip", "fine-tuned"]


def test_bad_inputs_are_clear_errors(tiny_arch, clip_pt, tiny_clip_state, tmp_path):
    wide = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP["vision_cfg"], width=48))
    (tmp_path / "tiny-wide.json").write_text(json.dumps(wide))
    with pytest.raises(ValueError, match=r"tiny-openai.pt: does not fit the CLIP model of open_clip architecture 'tiny-wide'"):
        clip("", config=str(tmp_path / "tiny-wide.json"), weights=str(clip_pt))
    with pytest.raises(ValueError, match="unknown option 'template'. Did you mean templates"):
        clip(tiny_arch, weights=str(clip_pt), template="x")
    with pytest.raises(ValueError, match="pass weights=PATH"):
        clip(tiny_arch)
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        clip(tiny_arch, weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-B-33'. Did you mean"):
        clip("ViT-B-33", weights=str(clip_pt))
    with pytest.raises(ValueError, match="no classification_head.weight"):
        finetuned(tiny_arch, weights=str(clip_pt))
    with pytest.raises(ValueError, match="needs label_space"):
        finetuned(tiny_arch, weights=str(_save_with_head(tmp_path, tiny_clip_state)))
    with pytest.raises(ValueError, match="option scale='big': expected a number"):
        clip(tiny_arch, weights=str(clip_pt), scale="big")


def _save_with_head(tmp_path, state):
    w, b = _head(1, n=7)
    path = tmp_path / "head7.safetensors"
    save_safetensors({**state, "classification_head.weight": w, "classification_head.bias": b}, path)
    return path


def test_preprocess_specs_follow_open_clip_conventions():
    spec = preprocess_spec_from_open_clip({"size": (256, 256), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                                           "interpolation": "bicubic", "resize_mode": "squash"})
    assert (spec.image_size, spec.resize_size, spec.resize_mode, spec.crop) == (256, 256, "squash", "none")
    with pytest.raises(ValueError, match="resize_mode 'longest' is not supported"):
        preprocess_spec_from_open_clip({"size": 224, "mean": (0,) * 3, "std": (1,) * 3, "resize_mode": "longest"})


def test_pretrained_tag_resolves_from_the_local_hf_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        hf_cached_weights("ViT-B-32", "openai")
    snap = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"x")
    assert hf_cached_weights("ViT-B-32", "openai").name == "open_clip_model.safetensors"
    with pytest.raises(ValueError, match="no pretrained tag 'nonsense'"):
        hf_cached_weights("ViT-B-32", "nonsense")


def test_openai_style_torchscript_archive_loads_without_running_it(tiny_arch, tiny_clip_state, tmp_path):
    import open_clip

    model = make_clip(tiny_arch, 0)
    model.load_state_dict(tiny_clip_state)
    traced = torch.jit.trace(model, (images(1), open_clip.get_tokenizer(tiny_arch)(["a photo"])), strict=False,
                             check_trace=False)
    traced.save(str(tmp_path / "tiny-jit.pt"))
    x = images(2)
    from_archive = clip(tiny_arch, weights=str(tmp_path / "tiny-jit.pt"), templates="simple-imagenet-7", scale="100")
    torch.save(tiny_clip_state, tmp_path / "tiny-sd.pt")
    from_state = clip(tiny_arch, weights=str(tmp_path / "tiny-sd.pt"), templates="simple-imagenet-7", scale="100")
    assert torch.equal(from_archive.logits(x), from_state.logits(x))


def test_a_torchscript_release_built_with_the_other_activation_is_refused(tiny_arch, tmp_path):
    """OpenAI's archives use QuickGELU; a GELU config runs them without error but loses accuracy."""
    import open_clip

    from models.clip import register_config

    quick = tmp_path / "tiny-clip-quickgelu.json"
    quick.write_text(json.dumps({**TINY_CLIP, "quick_gelu": True}))
    register_config(quick)
    model = make_clip("tiny-clip-quickgelu", 0)
    tokens = open_clip.get_tokenizer("tiny-clip-quickgelu")(["a photo"])
    torch.jit.trace(model, (images(1), tokens), strict=False, check_trace=False).save(str(tmp_path / "release.pt"))

    with pytest.raises(ValueError, match=r"release.pt: the activation is contradictory \(the architecture tiny-clip says gelu; the TorchScript archive release.pt says quickgelu\).*tiny-clip-quickgelu"):
        clip(tiny_arch, weights=str(tmp_path / "release.pt"), templates="simple-imagenet-7")
    ok = clip("tiny-clip-quickgelu", weights=str(tmp_path / "release.pt"), templates="simple-imagenet-7", scale="100")
    torch.save(model.state_dict(), tmp_path / "release-sd.pt")
    same = clip("tiny-clip-quickgelu", weights=str(tmp_path / "release-sd.pt"), templates="simple-imagenet-7", scale="100")
    assert torch.equal(ok.logits(images(2)), same.logits(images(2)))


def test_an_architecture_that_config_would_replace_is_refused(tiny_arch, clip_pt, tmp_path):
    """``config=`` registers its architecture under the file's stem and was built in place of the
    ARG, which still named the model in results: ``clip:ViT-B-32`` ran a tiny custom tower."""
    path = tmp_path / "tiny-clip-copy.json"
    path.write_text(json.dumps(TINY_CLIP))
    with pytest.raises(ValueError, match=r"model clip:ViT-B-32: option config=.*registers the architecture "
                                         r"'tiny-clip-copy' \(its file name\), so 'ViT-B-32' would not be built"):
        clip("ViT-B-32", config=str(path), weights=str(clip_pt))
    with pytest.raises(ValueError, match=r"model finetuned:tiny-clip: .*name the model finetuned:tiny-clip-copy"):
        finetuned(tiny_arch, config=str(path), weights=str(clip_pt))
    # the config's own name, or none, builds it
    assert clip("tiny-clip-copy", config=str(path), weights=str(clip_pt), templates="simple-imagenet-7").describe()["arch"] == "tiny-clip-copy"
    assert clip("", config=str(path), weights=str(clip_pt), templates="simple-imagenet-7").describe()["arch"] == "tiny-clip-copy"


def test_a_fine_tune_is_never_recorded_as_the_release_its_pretrained_tag_names(tmp_path):
    """``pretrained=openai`` next to a fine-tuned checkpoint names what it was fine-tuned from (its
    preprocessing and activation), not what the file is: it was recorded as the release
    ``clip:RN50@openai``, identified by that tag. Only the file's sha256 identifies a release."""
    from models.clip import create_open_clip

    visual = create_open_clip("RN50", None, "quickgelu", empty=False).visual.state_dict()
    head = {"classification_head.weight": torch.randn(6, 1024), "classification_head.bias": torch.zeros(6)}
    save_safetensors({f"visual.{k}": v for k, v in visual.items()} | head, tmp_path / "ft.safetensors")
    d = finetuned("RN50", weights=str(tmp_path / "ft.safetensors"), pretrained="openai", label_space="toy-6").describe()
    assert d["release"] is None
    assert d["pretrained_tag"] == "openai" and d["activation"] == "quickgelu"  # the tag still sets both


def test_a_config_named_after_an_open_clip_architecture_never_replaces_it(tmp_path):
    """open_clip registers a config file under its stem: a custom ``ViT-B-32.json`` redefined
    ViT-B-32 for every later model of the process (another run's ``clip:ViT-B-32`` built the
    tiny tower). A file that repeats open_clip's own config is harmless and still accepted."""
    import open_clip

    from models.clip import register_config

    custom = tmp_path / "custom" / "ViT-B-32.json"
    custom.parent.mkdir()
    custom.write_text(json.dumps(TINY_CLIP))
    with pytest.raises(ValueError, match="open_clip's own ViT-B-32, with another config.*rename the file"):
        register_config(custom)
    assert open_clip.get_model_config("ViT-B-32")["vision_cfg"]["width"] == 768
    same = tmp_path / "same" / "ViT-B-32.json"
    same.parent.mkdir()
    same.write_text(json.dumps(open_clip.get_model_config("ViT-B-32")))
    assert register_config(same) == "ViT-B-32"
    assert open_clip.get_model_config("ViT-B-32")["vision_cfg"]["width"] == 768
