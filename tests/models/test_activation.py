"""The activation a CLIP checkpoint was trained with is always known, or the load is refused.

A QuickGELU-trained state dict built with GELU runs and silently loses accuracy, so a config
that does not say (like open_clip's ``ViT-B-32``) needs the archive, ``-quickgelu``, a
pretrained tag, a known release's hash or ``activation=``."""

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_clip import TINY_CLIP, images

from models.checkpoints import file_sha256, save_safetensors
from models.clip import clip, create_open_clip, finetuned, register_config
from models.releases import EXTRA, Release
from models.soups import soup
from models.wiseft import wiseft


@pytest.fixture(scope="module")
def plain_arch(tmp_path_factory):
    """A config that, like open_clip's ViT-B-32, does not say which activation it was trained with."""
    path = tmp_path_factory.mktemp("cfg") / "tiny-plain.json"
    path.write_text(json.dumps({k: v for k, v in TINY_CLIP.items() if k != "quick_gelu"}))
    return register_config(path)


@pytest.fixture(scope="module")
def quick_model(plain_arch):
    """The reference: the architecture built with QuickGELU, as OpenAI's CLIP was trained."""
    torch.manual_seed(7)
    model = create_open_clip(plain_arch, activation="quickgelu")
    assert any(type(m).__name__ == "QuickGELU" for m in model.modules())
    return model


def _wiseft_checkpoint(model, path):
    """WiSE-FT's ImageClassifier layout: image_encoder.model.* plus classification_head.*"""
    g = torch.Generator().manual_seed(3)
    head_w, head_b = torch.randn(4, TINY_CLIP["embed_dim"], generator=g), torch.randn(4, generator=g)
    state = {f"image_encoder.model.{k}": v for k, v in model.state_dict().items()}
    save_safetensors({**state, "classification_head.weight": head_w, "classification_head.bias": head_b}, path)
    return head_w, head_b


def test_a_quickgelu_state_dict_without_an_activation_is_refused_naming_both(plain_arch, quick_model, tmp_path):
    _wiseft_checkpoint(quick_model, tmp_path / "ft.safetensors")
    torch.save(quick_model.state_dict(), tmp_path / "zs.pt")
    for build in (lambda: finetuned(plain_arch, weights=str(tmp_path / "ft.safetensors"), label_space="toy-4"),
                  lambda: clip(plain_arch, weights=str(tmp_path / "zs.pt"), templates="simple-imagenet-7"),
                  lambda: soup(plain_arch, ingredients=str(tmp_path / "ft.safetensors"), label_space="toy-4"),
                  lambda: wiseft(plain_arch, zeroshot=str(tmp_path / "zs.pt"), finetuned=str(tmp_path / "ft.safetensors"),
                                 templates="simple-imagenet-7", label_space="toy-4")):
        with pytest.raises(ValueError, match=r"cannot tell whether these weights were trained with QuickGELU.*"
                                             r"activation=quickgelu or --model-arg activation=gelu"):
            build()
    with pytest.raises(ValueError, match=r"activation='relu': expected one of quickgelu, gelu"):
        finetuned(plain_arch, weights=str(tmp_path / "ft.safetensors"), label_space="toy-4", activation="relu")


def test_with_the_activation_it_gives_the_reference_models_logits(plain_arch, quick_model, tmp_path):
    head_w, head_b = _wiseft_checkpoint(quick_model, tmp_path / "ft.safetensors")
    x = images(3)
    with torch.no_grad():
        reference = F.linear(F.normalize(quick_model.visual(x).float(), dim=-1), head_w, head_b)
    right = finetuned(plain_arch, weights=str(tmp_path / "ft.safetensors"), label_space="toy-4", activation="quickgelu")
    assert torch.equal(right.logits(x), reference)
    assert right.describe()["activation"] == "quickgelu"
    assert right.describe()["activation_source"] == "activation=quickgelu"
    wrong = finetuned(plain_arch, weights=str(tmp_path / "ft.safetensors"), label_space="toy-4", activation="gelu")
    assert not torch.allclose(wrong.logits(x), reference, atol=1e-4)  # the trap is real: GELU runs, differently


def test_a_known_release_hash_says_the_activation(plain_arch, quick_model, tmp_path, monkeypatch):
    torch.save(quick_model.state_dict(), tmp_path / "release.pt")
    sha = file_sha256(tmp_path / "release.pt")
    monkeypatch.setitem(EXTRA, sha, Release(plain_arch, "tiny", sha, "quickgelu", f"clip:{plain_arch}@tiny"))
    model = clip(plain_arch, weights=str(tmp_path / "release.pt"), templates="simple-imagenet-7")
    d = model.describe()
    assert d["activation"] == "quickgelu" and "known release" in d["activation_source"]
    assert d["release"]["name"] == f"clip:{plain_arch}@tiny"
    assert d["release"]["published"] is None  # measured with another head than the published figures
    with pytest.raises(ValueError, match=r"contradictory \(the known release .* says quickgelu; activation=gelu says gelu\)"):
        clip(plain_arch, weights=str(tmp_path / "release.pt"), templates="simple-imagenet-7", activation="gelu")


def test_openai_releases_come_from_open_clips_download_urls():
    from models.releases import find_release, open_clip_releases

    vit_b_32 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    release = find_release(vit_b_32, "ViT-B-32")
    assert (release.arch, release.tag, release.activation) == ("ViT-B-32", "openai", "quickgelu")
    assert find_release(vit_b_32, "ViT-B-32-quickgelu").published == "clip:ViT-B-32-quickgelu@openai"
    assert find_release("0" * 64, "ViT-B-32") is None
    laion = [r for r in open_clip_releases() if r.published == "clip:ViT-B-32@laion2b_e16"]
    assert laion and laion[0].sha256 == "af8dbd0c" and laion[0].activation == "gelu"


def test_wiseft_endpoints_with_different_activations_are_refused(plain_arch, quick_model, tmp_path, monkeypatch):
    _wiseft_checkpoint(quick_model, tmp_path / "zs.pt")
    _wiseft_checkpoint(create_open_clip(plain_arch, activation="quickgelu"), tmp_path / "ft.safetensors")
    sha = file_sha256(tmp_path / "ft.safetensors")
    monkeypatch.setitem(EXTRA, sha, Release(plain_arch, "gelu-ft", sha, "gelu", "finetuned:gelu"))
    with pytest.raises(ValueError, match=r"ft.safetensors: the known release .* says gelu, but the zero-shot model is quickgelu"):
        wiseft(plain_arch, zeroshot=str(tmp_path / "zs.pt"), finetuned=str(tmp_path / "ft.safetensors"),
               label_space="toy-4", activation="quickgelu")
    monkeypatch.delitem(EXTRA, sha)
    ok = wiseft(plain_arch, zeroshot=str(tmp_path / "zs.pt"), finetuned=str(tmp_path / "ft.safetensors"),
                label_space="toy-4", activation="quickgelu")
    assert ok.describe()["activation"] == "quickgelu"
    zs_sha, ft_sha = file_sha256(tmp_path / "zs.pt"), file_sha256(tmp_path / "ft.safetensors")
    assert ok.name == f"wiseft:{plain_arch}[zs {zs_sha[:8]},ft {ft_sha[:8]}](alpha=0.5)"  # names its weights


def test_an_architecture_or_a_pretrained_tag_says_the_activation_without_any_weights():
    from models.clip import resolve_activation
    from models.releases import tagged_release

    assert resolve_activation("ViT-B-32-quickgelu", None, None, None, None, "x") == ("quickgelu", "the architecture ViT-B-32-quickgelu")
    assert resolve_activation("ViT-B-32", "openai", None, None, None, "x") == ("quickgelu", "pretrained=openai")
    assert resolve_activation("ViT-B-32", "laion2b_s34b_b79k", None, None, None, "x")[0] == "gelu"
    with pytest.raises(ValueError, match=r"contradictory \(pretrained=openai says quickgelu; activation=gelu says gelu\)"):
        resolve_activation("ViT-B-32", "openai", None, None, "gelu", "x")
    with pytest.raises(ValueError, match="x: cannot tell whether"):
        resolve_activation("ViT-B-32", None, None, None, None, "x")
    assert tagged_release("ViT-B-32", "laion2b_s34b_b79k").published == "clip:ViT-B-32@laion2b_s34b_b79k"


def test_timm_releases_come_from_the_sha256_prefix_in_timms_file_names(tmp_path, monkeypatch):
    """timm's own table (torch.hub's NAME-<sha256 prefix>.pth) names releases; a file that is one
    (here a registered tiny timm model) is described as that release with its published name."""
    import timm

    from models.releases import timm_releases
    from models.timm_models import timm as timm_factory

    r50 = {r.published: r for r in timm_releases("resnet50")}
    assert r50["resnet50.a1_in1k"].sha256 == "14fe96d1" and r50["resnet50.a1_in1k"].head is None
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=1000).state_dict(), tmp_path / "r.pth")
    sha = file_sha256(tmp_path / "r.pth")
    assert timm_factory("test_resnet", weights=str(tmp_path / "r.pth")).describe()["release"] is None
    monkeypatch.setitem(EXTRA, sha, Release("test_resnet", "tiny", sha[:8], "", "test_resnet.tiny", None))
    release = timm_factory("test_resnet", weights=str(tmp_path / "r.pth")).describe()["release"]
    assert (release["name"], release["published"]) == ("test_resnet.tiny", "test_resnet.tiny")
    assert release["identified_by"].startswith(f"sha256 {sha[:12]}")


def test_the_cached_zero_shot_head_of_one_activation_is_never_served_for_the_other(plain_arch, quick_model, tmp_path):
    """The head cache was keyed by weights, architecture name, names and templates: a run with
    activation=gelu left a head that a later activation=quickgelu run of the same weights read
    back, text tower of the wrong activation and all."""
    torch.save(quick_model.state_dict(), tmp_path / "zs.pt")

    def build(activation, cache):
        return clip(plain_arch, weights=str(tmp_path / "zs.pt"), templates="simple-imagenet-7",
                    activation=activation, cache=cache)

    gelu = build("gelu", "true")
    quick = build("quickgelu", "true")
    fresh = build("quickgelu", "false")
    assert quick.describe()["head"]["cache"] == "miss"  # was: hit, the GELU head
    assert torch.equal(quick.weight, fresh.weight)
    assert not torch.allclose(quick.weight, gelu.weight, atol=1e-3)
    assert build("quickgelu", "true").describe()["head"]["cache"] == "hit"  # its own entry still serves it
