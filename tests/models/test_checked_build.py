"""A checked build (``harness.api.checking_build``) is what the engine runs for every model
before a command writes anything: it must refuse exactly what the real build refuses, describe
the same model (name, label space, width, preprocessing), hold no weights (modules on the
``meta`` device) and write nothing (no zero-shot head in the cache)."""

import json

import pytest
import torch
from tiny_clip import TINY_CLIP

from harness.api import checking_build
from harness.registry import get_model_factory
from models.checkpoints import save_safetensors


def _same_model(real, checked):
    assert (checked.name, checked.label_space, checked.num_classes) == (real.name, real.label_space, real.num_classes)
    assert checked.preprocess_spec == real.preprocess_spec
    # the weights are not read into the modules; a zero-shot or fine-tuned head is small and real
    assert {p.device.type for n, p in checked.named_parameters() if not n.startswith("classification_head.")} == {"meta"}
    assert {p.device.type for p in real.parameters()} == {"cpu"}


def _build_both(factory: str, arg: str, **options):
    with checking_build():
        checked = get_model_factory(factory)(arg, **options)
    return get_model_factory(factory)(arg, **options), checked


@pytest.fixture
def clip_files(tmp_path, tiny_arch, tiny_clip_state):
    torch.save(tiny_clip_state, tmp_path / "clip.pt")
    g = torch.Generator().manual_seed(0)
    for name in ("ft", "ft2"):
        head = {"classification_head.weight": torch.randn(4, TINY_CLIP["embed_dim"], generator=g),
                "classification_head.bias": torch.randn(4, generator=g)}
        save_safetensors({**tiny_clip_state, **head}, tmp_path / f"{name}.safetensors")
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\nwhite\n")
    return tmp_path


def test_a_checked_zero_shot_clip_describes_the_model_and_caches_no_head(tiny_arch, clip_files, tmp_path):
    options = dict(weights=str(clip_files / "clip.pt"), classnames=str(clip_files / "names.txt"),
                   templates="simple-imagenet-7", label_space="toy-4")
    heads = tmp_path / "cache" / "zeroshot-heads"
    with checking_build():
        checked = get_model_factory("clip")(tiny_arch, **options)
    assert not heads.exists()
    real = get_model_factory("clip")(tiny_arch, **options)
    assert len(list(heads.glob("*.safetensors"))) == 1  # the real build caches its head
    _same_model(real, checked)
    assert checked.weight.shape == real.weight.shape
    assert checked.describe()["weights_sha256"] == real.describe()["weights_sha256"]


def test_checked_fine_tuned_wiseft_and_soup_models_describe_the_real_ones(tiny_arch, clip_files):
    ft, ft2 = str(clip_files / "ft.safetensors"), str(clip_files / "ft2.safetensors")
    _same_model(*_build_both("finetuned", tiny_arch, weights=ft, label_space="toy-4"))
    _same_model(*_build_both("wiseft", tiny_arch, zeroshot=ft, finetuned=ft2, alpha="0.5", label_space="toy-4"))
    _same_model(*_build_both("soup", tiny_arch, ingredients=f"{ft},{ft2}", label_space="toy-4"))


def test_checked_timm_and_torchvision_models_describe_the_real_ones(tmp_path):
    import timm
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    save_safetensors(timm.create_model("test_resnet", num_classes=4).state_dict(), tmp_path / "resnet.safetensors")
    torch.save(mobilenet_v3_small(num_classes=4).state_dict(), tmp_path / "mobilenet.pth")
    _same_model(*_build_both("timm", "test_resnet", weights=str(tmp_path / "resnet.safetensors"), label_space="toy-4"))
    _same_model(*_build_both("torchvision", "mobilenet_v3_small", weights=str(tmp_path / "mobilenet.pth"), num_classes="4",
                                label_space="toy-4"))


def test_a_checked_build_refuses_what_the_real_build_refuses(tiny_arch, clip_files, tmp_path):
    """Each bad input, built for real and checked: one error, word for word."""
    import timm

    save_safetensors(timm.create_model("test_resnet", num_classes=4).state_dict(), tmp_path / "resnet.safetensors")
    nan = dict(timm.create_model("test_resnet", num_classes=4).state_dict())
    nan["fc.bias"] = torch.full_like(nan["fc.bias"], float("nan"))
    save_safetensors(nan, tmp_path / "nan.safetensors")
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip archive")
    wide = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP["vision_cfg"], width=48))
    (tmp_path / "tiny-wide.json").write_text(json.dumps(wide))
    bad = [
        ("timm", "test_vit", dict(weights=str(tmp_path / "resnet.safetensors"), label_space="toy-4")),
        ("timm", "test_resnet", dict(weights=str(tmp_path / "garbage.pt"), label_space="toy-4")),
        ("timm", "test_resnet", dict(weights=str(tmp_path / "nan.safetensors"), label_space="toy-4")),
        ("timm", "test_resnet", dict(weights=str(tmp_path / "resnet.safetensors"), label_spaec="toy-4")),
        ("clip", "", dict(config=str(tmp_path / "tiny-wide.json"), weights=str(clip_files / "clip.pt"))),
        ("clip", tiny_arch, dict(weights=str(clip_files / "clip.pt"), template="x")),
        ("finetuned", tiny_arch, dict(weights=str(clip_files / "clip.pt"))),
        ("wiseft", tiny_arch, dict(zeroshot=str(clip_files / "ft.safetensors"), finetuned=str(tmp_path / "resnet.safetensors"),
                                   label_space="toy-4")),
    ]
    for factory, arg, options in bad:
        errors = []
        for checked in (False, True):
            with checking_build() if checked else torch.no_grad():
                with pytest.raises((ValueError, FileNotFoundError)) as exc:
                    get_model_factory(factory)(arg, **options)
            errors.append(str(exc.value))
        assert errors[0] == errors[1], (factory, options)
