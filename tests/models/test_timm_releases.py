"""timm weights that are a known release are built with the release's own tag (whose pretrained
config sets the preprocessing), whether known by the sha256 prefix in timm's file name or, for
weights timm publishes only on the Hugging Face Hub, by their place in the local Hub cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch

import models.releases as releases
from models.checkpoints import file_sha256, save_safetensors
from models.releases import Release, hf_cache_origin
from models.timm_models import timm as timm_factory


def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()}


def hub_cache(root: Path, repo: str, content: Path) -> Path:
    """``content`` laid out as huggingface_hub caches a Git LFS file of ``repo``: the blob named
    by its sha256, linked from the snapshot's ``model.safetensors``."""
    sha = file_sha256(content)
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / sha).write_bytes(content.read_bytes())
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    os.symlink(Path("..") / ".." / "blobs" / sha, snap / "model.safetensors")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    return snap / "model.safetensors"


def test_hub_only_weights_are_known_by_their_place_in_the_hub_cache(tmp_path):
    plain = tmp_path / "resnet18.safetensors"
    save_safetensors(resnet18_state(), plain)
    cached = hub_cache(tmp_path / "hub", "timm/resnet18.tv_in1k", plain)
    assert hf_cache_origin(cached, file_sha256(cached)) == "timm/resnet18.tv_in1k"
    clf = timm_factory("resnet18", weights=str(cached))
    release = clf.describe()["release"]
    assert (release["name"], release["published"]) == ("resnet18.tv_in1k", "resnet18.tv_in1k")
    assert "timm/resnet18.tv_in1k" in release["identified_by"]
    # built with the release's tag: tv_in1k's 0.875 bilinear crop, not the default a1_in1k's 0.95 bicubic
    spec = clf.preprocess_spec
    assert (spec.resize_size, spec.interpolation) == (256, "bilinear") and clf.describe()["pretrained_cfg"] == "tv_in1k"
    assert timm_factory("resnet18", weights=str(plain)).preprocess_spec.interpolation == "bicubic"  # unknown: the default tag
    assert timm_factory("resnet18", weights=str(plain)).describe()["release"] is None  # the same bytes out of the cache
    with pytest.raises(ValueError, match=r"timm's resnet18.tv_in1k .*names timm:resnet18.a1_in1k"):
        timm_factory("resnet18.a1_in1k", weights=str(cached))


def test_a_hub_cache_blob_whose_bytes_are_not_its_name_is_not_a_release(tmp_path):
    plain = tmp_path / "resnet18.safetensors"
    save_safetensors(resnet18_state(), plain)
    cached = hub_cache(tmp_path / "hub", "timm/resnet18.tv_in1k", plain)
    state = resnet18_state()
    state["fc.bias"] = state["fc.bias"] + 1
    save_safetensors(state, tmp_path / "other.safetensors")
    Path(os.path.realpath(cached)).write_bytes((tmp_path / "other.safetensors").read_bytes())  # edited in place
    assert hf_cache_origin(cached, file_sha256(cached)) is None
    assert timm_factory("resnet18", weights=str(cached)).describe()["release"] is None


def test_a_torch_hub_release_is_built_with_its_tag_too(tmp_path, monkeypatch):
    path = tmp_path / "resnet18-tv.pth"
    torch.save(resnet18_state(), path)
    sha = file_sha256(path)
    table = (Release("resnet18", "tv_in1k", sha[:8], "", "resnet18.tv_in1k", None),)
    monkeypatch.setattr(releases, "timm_releases", lambda arch: table if arch == "resnet18" else ())
    clf = timm_factory("resnet18", weights=str(path))
    assert clf.describe()["release"]["published"] == "resnet18.tv_in1k"
    assert clf.preprocess_spec.interpolation == "bilinear" and clf.describe()["pretrained_cfg"] == "tv_in1k"
