"""Tiny real architectures with random weights, saved in the real checkpoint formats."""

import json

import pytest
from tiny_clip import TINY_CLIP, make_clip


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


@pytest.fixture(scope="session")
def tiny_clip_state(tiny_arch):
    """An open_clip / OpenAI-style CLIP state dict (visual.*, transformer.*, logit_scale, ...)."""
    return {k: v.clone() for k, v in make_clip(tiny_arch, 0).state_dict().items()}
