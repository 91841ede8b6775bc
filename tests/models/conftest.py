"""Tiny real architectures with random weights, saved in the real checkpoint formats."""

import json

import pytest
import torch

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory):
    """Registers an open_clip config named ``tiny-clip`` (through a config JSON, as a user would)."""
    from models.clip import register_config

    path = tmp_path_factory.mktemp("cfg") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    assert register_config(path) == "tiny-clip"
    return "tiny-clip"


def make_clip(arch, seed):
    from models.clip import create_open_clip

    torch.manual_seed(seed)
    model = create_open_clip(arch)
    with torch.no_grad():  # make the logit scale a non-trivial learned value
        model.logit_scale.fill_(float(torch.log(torch.tensor(50.0 + seed))))
    return model


@pytest.fixture(scope="session")
def tiny_clip_state(tiny_arch):
    """An open_clip / OpenAI-style CLIP state dict (visual.*, transformer.*, logit_scale, ...)."""
    return {k: v.clone() for k, v in make_clip(tiny_arch, 0).state_dict().items()}


def images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
