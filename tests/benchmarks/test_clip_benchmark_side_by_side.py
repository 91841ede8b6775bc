"""shiftbench against the real CLIP_benchmark (``clip-benchmark==1.6.2``, installed by ``tox -e
bench``), side by side on one machine: see ``side_by_side.py``. Figures are ratios from one run,
printed with the CPU capability; nothing is asserted about time.

``SHIFTBENCH_BENCH_IMAGES`` sets the number of JPEGs (default 256; the figures in
docs/benchmarks.md used 1000), ``SHIFTBENCH_PEER_TOOLS`` the folder with the peer tools.
"""

from __future__ import annotations

import os

import pytest
from side_by_side import head_build, peer_tools, side_by_side

pytest.importorskip("clip_benchmark", reason="the side-by-side benchmark runs the real CLIP_benchmark: tox -e bench installs it")
N_IMAGES = int(os.environ.get("SHIFTBENCH_BENCH_IMAGES", "256"))


def report(benchmark, label: str, figures: dict) -> None:
    benchmark.extra_info.update({k: v for k, v in figures.items() if not isinstance(v, dict)})
    print(f"\n{label}:\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))


@pytest.mark.slow
def test_first_pass_against_clip_benchmark_at_its_default_precision(benchmark, tmp_path):
    if peer_tools() is None:
        pytest.skip("set SHIFTBENCH_PEER_TOOLS to the folder holding run_clip_benchmark.py and make_shiftdata.py")
    figures = benchmark.pedantic(lambda: side_by_side(tmp_path, N_IMAGES, rounds=2), rounds=1, iterations=1)
    report(benchmark, f"ViT-B-32, {N_IMAGES} JPEGs, shiftbench vs CLIP_benchmark (bf16 autocast)", figures)


@pytest.mark.slow
def test_zero_shot_head_against_clip_benchmark(benchmark):
    classes = int(os.environ.get("SHIFTBENCH_BENCH_HEAD_CLASSES", "20"))
    figures = benchmark.pedantic(lambda: head_build(classes), rounds=1, iterations=1)
    report(benchmark, f"ViT-B-32 zero-shot head, {classes} classes x 80 templates", figures)


TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_on_a_cpu(benchmark, tmp_path):
    """``tox -e gpu-bench``'s script at toy size on the CPU (8 JPEGs, one head class, a 3-alpha
    sweep of a tiny architecture): every stage runs and writes its JSON."""
    import json

    from side_by_side import main

    if peer_tools() is None:
        pytest.skip("set SHIFTBENCH_PEER_TOOLS to the folder holding run_clip_benchmark.py and make_shiftdata.py")
    (tmp_path / "tiny-bench-clip.json").write_text(json.dumps(TINY))
    out = tmp_path / "gpu-bench.json"
    args = ["--work", str(tmp_path / "work"), "--images", "8", "--workers", "2", "--batch-size", "4", "--device", "cpu",
            "--head-classes", "1", "--sweep-per-class", "1", "--sweep-alphas", "3", "--sweep-arch", "tiny-bench-clip",
            "--sweep-config", str(tmp_path / "tiny-bench-clip.json"), "--out", str(out)]
    assert benchmark.pedantic(main, args=(args,), rounds=1, iterations=1) == 0
    figures = json.loads(out.read_text())
    assert figures["side_by_side"]["images"] == 8 and figures["side_by_side"]["first_pass_bf16_torchvision_vs_clip_benchmark"] > 0
    assert figures["head"]["prompts"] == 80 and figures["head"]["cached"] == "hit"
    assert figures["wiseft_sweep"]["cells"] == 3 * 6
