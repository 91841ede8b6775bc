"""Building a model whose every parameter is loaded next skips their random initialisation, and
changes nothing else: the loaded model equals one built the slow way, buffers (which checkpoints
need not hold) are initialised as before, and a checkpoint that leaves a parameter out is refused."""

from __future__ import annotations

import json

import pytest
import torch

from models.checkpoints import load_into, parameters_uninitialised, save_safetensors

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_parameters_keep_their_allocation_and_everything_else_initialises():
    with parameters_uninitialised(), torch.no_grad():  # nn.init works under no_grad
        p = torch.nn.Parameter(torch.zeros(1000))
        t = torch.zeros(1000)
        p.uniform_(1, 2)
        p.normal_()
        t.uniform_(1, 2)
    assert torch.equal(p, torch.zeros(1000)) and bool(((t >= 1) & (t <= 2)).all())
    with torch.no_grad():
        p.uniform_(1, 2)  # restored on exit
    assert bool((p >= 1).all())


def test_an_open_clip_model_built_empty_and_loaded_equals_the_slow_build(tmp_path):
    from models.clip import create_open_clip, register_config

    config = tmp_path / "tiny-empty-clip.json"
    config.write_text(json.dumps(TINY))
    register_config(config)
    torch.manual_seed(0)
    slow = create_open_clip("tiny-empty-clip")
    fast = create_open_clip("tiny-empty-clip", empty=True)
    # the text tower's causal mask is a buffer no checkpoint holds: initialised as before
    assert torch.equal(dict(fast.named_buffers())["attn_mask"], dict(slow.named_buffers())["attn_mask"])
    load_into(fast, slow.state_dict(), "slow.pt", "the tiny CLIP")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fast.encode_image(x), slow.encode_image(x))
        tokens = torch.randint(0, 49408, (2, 77))
        assert torch.equal(fast.encode_text(tokens), slow.encode_text(tokens))
    partial = {k: v for k, v in slow.state_dict().items() if k != "visual.proj"}
    with pytest.raises(ValueError, match="does not fit"):  # a parameter left out is never left uninitialised
        load_into(create_open_clip("tiny-empty-clip", empty=True), partial, "partial.pt", "the tiny CLIP")


def test_timm_and_torchvision_models_load_exactly_what_the_checkpoint_holds(tmp_path):
    import timm
    from torchvision.models import resnet18

    from models.timm_models import timm as timm_factory
    from models.timm_models import torchvision as torchvision_factory

    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    save_safetensors({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "t.safetensors")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(timm_factory("resnet18", weights=str(tmp_path / "t.safetensors")).module(x), ref(x))
    tv = resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    with torch.no_grad():
        assert torch.equal(torchvision_factory("resnet18", weights=str(tmp_path / "tv.pth")).module(x), tv(x))
