"""Speed and memory of the model code, as ratios against baselines measured in the same run.

Run with ``pytest tests/benchmarks/test_models_bench.py --benchmark-only``. Figures land in
each benchmark's ``extra_info`` (shown with ``--benchmark-json``):
- zero-shot head: ours vs open_clip's ``build_zero_shot_classifier`` on the same model;
- WiSE-FT interpolation and soups of ViT-B/32-sized state dicts (151M parameters):
  wall time, and peak anonymous memory of a streaming merge vs a naive load-everything merge, per
  number of ingredients (each measured in a fresh process, net of the import-only figure).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("pytest_benchmark")

NAIVE_SOUP = """
import sys, torch
from models.checkpoints import load_state_dict
# every ingredient in memory at once (as torch.load of .pt files does; safetensors would stay mapped)
states = [{k: v.clone() for k, v in load_state_dict(p).items()} for p in sys.argv[1:]]
out = {k: sum(s[k].double() for s in states).div(len(states)).float() for k in states[0]}
"""
STREAMING_SOUP = """
import sys
from models.merging import average
out = average(sys.argv[1:])
"""
IMPORT_ONLY = """
import sys, torch
from models.merging import average
from models.checkpoints import load_state_dict
"""
# Peak anonymous (heap) memory, sampled: memory-mapped checkpoint pages are file-backed and
# reclaimable, so ru_maxrss would count the files being read rather than what the merge holds.
SAMPLER = """
import threading, time
def _anon_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:"))
_peak = [_anon_kib()]
def _sample():
    while True:
        _peak[0] = max(_peak[0], _anon_kib())
        time.sleep(0.002)
threading.Thread(target=_sample, daemon=True).start()
"""
REPORT = "\n_peak[0] = max(_peak[0], _anon_kib()); print(_peak[0])\n"


def _peak_anon_mb(script: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", SAMPLER + script + REPORT, *args], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.split()[-1]) / 1024.0


@pytest.fixture(scope="module")
def vitb32_checkpoints(tmp_path_factory):
    """Four ViT-B/32-shaped CLIP state dicts with different random values, as safetensors."""
    import open_clip

    from models.checkpoints import save_safetensors

    shapes = {k: v.shape for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    folder = tmp_path_factory.mktemp("vitb32")
    paths = []
    for i in range(4):
        g = torch.Generator().manual_seed(i)
        state = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
        paths.append(folder / f"model_{i}.safetensors")
        save_safetensors(state, paths[-1])
        del state
    return paths


def test_zero_shot_head_vs_open_clip(benchmark):
    """Same model, prompts and recipe; rounds interleaved (A/B) so machine load hits both alike."""
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    from models.prompts import load_classnames, load_templates
    from models.zeroshot import build_zeroshot_head

    # half the width and depth of ViT-B-32's text tower, 77-token context
    _MODEL_CONFIGS.setdefault("bench-text-clip", {
        "embed_dim": 256, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6}})
    torch.manual_seed(0)
    model = open_clip.create_model("bench-text-clip").eval()
    tokenizer = open_clip.get_tokenizer("bench-text-clip")
    names = load_classnames("imagenet-1k")[1][:10]
    templates = load_templates("openai-imagenet-80")[1]
    lambdas = [lambda c, t=t: t.format(c) for t in templates]

    def reference():
        return open_clip.build_zero_shot_classifier(model, tokenizer, names, lambdas)

    def ours():
        return build_zeroshot_head(model, tokenizer, names, templates, progress=False)

    base_s, ours_s = [], []
    for _ in range(3):
        for fn, times in ((reference, base_s), (ours, ours_s)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    head = benchmark.pedantic(ours, rounds=2, iterations=1)
    assert torch.allclose(head, reference().T, atol=1e-5)
    benchmark.extra_info.update(
        prompts=len(names) * len(templates), open_clip_min_s=min(base_s), ours_min_s=min(ours_s),
        speedup_vs_open_clip=round(min(base_s) / min(ours_s), 2))


STREAMING_WISEFT = """
import sys
from models.merging import interpolate
out = interpolate(sys.argv[1], sys.argv[2], 0.5)
"""
NAIVE_WISEFT = """
import sys
from models.checkpoints import load_state_dict
a, b = ({k: v.clone() for k, v in load_state_dict(p).items()} for p in sys.argv[1:3])
out = {k: 0.5 * a[k] + 0.5 * b[k] for k in a}
"""


def test_wiseft_interpolation_vitb32(benchmark, vitb32_checkpoints):
    from models.merging import interpolate

    a, b = vitb32_checkpoints[:2]
    merged = benchmark.pedantic(interpolate, args=(a, b, 0.5), rounds=2, iterations=1)
    base = _peak_anon_mb(IMPORT_ONLY)
    model_mb = a.stat().st_size / 2**20
    streaming = _peak_anon_mb(STREAMING_WISEFT, str(a), str(b)) - base
    naive = _peak_anon_mb(NAIVE_WISEFT, str(a), str(b)) - base
    benchmark.extra_info.update(
        parameters=sum(v.numel() for v in merged.values()), model_mb=round(model_mb),
        streaming_peak_in_models=round(streaming / model_mb, 2), naive_peak_in_models=round(naive / model_mb, 2))


@pytest.mark.parametrize("n", [2, 4])
def test_soup_peak_memory_vs_ingredients(benchmark, vitb32_checkpoints, n):
    from models.merging import average

    files = [str(p) for p in vitb32_checkpoints[:n]]
    benchmark.pedantic(average, args=(files,), rounds=1, iterations=1)
    base = _peak_anon_mb(IMPORT_ONLY)
    streaming = _peak_anon_mb(STREAMING_SOUP, *files) - base
    naive = _peak_anon_mb(NAIVE_SOUP, *files) - base
    model_mb = vitb32_checkpoints[0].stat().st_size / 2**20
    benchmark.extra_info.update(
        ingredients=n, model_mb=round(model_mb), streaming_peak_mb=round(streaming), naive_peak_mb=round(naive),
        streaming_peak_in_models=round(streaming / model_mb, 2), naive_peak_in_models=round(naive / model_mb, 2),
        naive_over_streaming=round(naive / streaming, 2))
