"""The zero-shot head on the run's device, and its cache saved by many writers at once."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import save_file
from tiny_clip import make_clip

from harness.api import building_on


def test_concurrent_head_cache_saves_do_not_crash(tmp_path, monkeypatch):
    """torchrun ranks (or Ray tasks) build the same head and save it at the same moment."""
    import safetensors.torch as st

    from models.checkpoints import save_safetensors

    real, gate = st.save_file, threading.Barrier(2)

    def save_then_wait(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        gate.wait(timeout=10)  # both have written their temp file before either renames it

    monkeypatch.setattr(st, "save_file", save_then_wait)
    errors: list[BaseException] = []

    def rank(value: float) -> None:
        try:
            save_safetensors({"head": torch.full((2, 2), value)}, tmp_path / "head.safetensors")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(v,)) for v in (1.0, 2.0)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    from safetensors.torch import load_file

    assert float(load_file(str(tmp_path / "head.safetensors"))["head"][0, 0]) in (1.0, 2.0)  # one whole file
    assert [p.name for p in tmp_path.iterdir()] == ["head.safetensors"]  # no temp file left


def test_zero_shot_head_is_encoded_on_the_models_device(tmp_path, tiny_arch, monkeypatch):
    """The engine builds models inside ``building_on(run device)``; ``meta`` stands in for cuda."""
    import models.clip as mclip
    import models.zeroshot as zs

    save_file({k: v.contiguous() for k, v in make_clip(tiny_arch, 0).state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    seen = []

    def spy(model, *a, **kw):
        seen.append(next(model.parameters()).device.type)
        raise RuntimeError("stop")  # the device is all this test needs

    monkeypatch.setattr(zs, "build_zeroshot_head", spy)
    options = dict(weights=str(tmp_path / "w.safetensors"), classnames=str(tmp_path / "names.txt"), label_space="pets")
    for device in ("meta", None):
        with building_on(device), pytest.raises(RuntimeError, match="stop"):
            mclip.clip(tiny_arch, **options)
    assert seen == ["meta", "cpu"], f"the text tower ran on {seen}"

