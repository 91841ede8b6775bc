"""Engine throughput on this machine, as ratios measured in one run.

Pipelines over the same JPEGs (ImageNet-sized, 500x375, ImageNetV2 folder layout) and the
same model:

- ``clip_benchmark``: CLIP_benchmark's evaluation loop re-implemented faithfully (PIL
  ``preprocess`` with Normalize in DataLoader workers, default collate, batch 64, bf16
  autocast under no_grad, ``encode_image`` -> normalise -> ``100 * f @ W``, logits to CPU).
- ``first pass``: ``shiftbench run`` on a cold cache (decode in workers, write the uint8 cache),
  with the PIL decoder (the CPU default) and with ``--decoder torchvision`` (the batched path a
  GPU run takes, here on the CPU).
- ``cached pass``: another model with the same transform (cache read, no JPEG decoding).
- ``model only``: the engine's own forward (normalise, bf16 autocast, no_grad) on uint8
  batches already in memory: the limit any pass can reach.
- ``wiseft sweep``: ``shiftbench wiseft`` over alphas x two shifts from a cold cache, against
  the model-only time for the same number of images.

Two models: open_clip ViT-B-32 (random init; the forward dominates on CPU) and a tiny net
(loading-bound, so the pipeline itself shows). Run:
``pytest tests/benchmarks/test_engine_bench.py --benchmark-only -s``; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import Classifier, Example, LazyExample, PreprocessSpec, Shift, ShiftSpec
from harness.config import RunConfig
from harness.predict import make_forward
from harness.run import Engine, ModelSource

N_IMAGES = 128
BATCH = 64
WORKERS = 2
CLIP_SPEC = PreprocessSpec(image_size=224, resize_size=224)  # open_clip ViT-B-32 eval transform


def write_jpegs(root: Path, n: int = N_IMAGES, seed: int = 0, name: str = "bench") -> Path:
    """Smooth colour noise plus grain, quality 90, 500x375 / 375x500, in class folders 0..9."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)
        low = rng.random((h // 25 + 1, w // 25 + 1, 3))
        img = np.kron(low, np.ones((25, 25, 1)))[:h, :w] * 200 + rng.random((h, w, 3)) * 55
        d = root / name / str(i % 10)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(d / f"{i:05d}.jpeg", quality=90)
    return root


class BenchShift(Shift):
    """ImageNetV2-style folders (label = int(folder)) with deferred decoding and file bytes."""

    def __init__(self, name: str = "bench") -> None:
        self.spec = ShiftSpec(name=name, version="1", family="bench", label_space="imagenet-1k", num_classes=1000, expected_size=N_IMAGES)

    def _files(self, root: Path) -> list[tuple[Path, int]]:
        base = Path(root) / self.spec.name
        return [(p, int(d.name)) for d in sorted(base.iterdir(), key=lambda d: int(d.name)) for p in sorted(d.iterdir())]

    def examples(self, root, transform=None, split=None) -> Iterator[Example]:
        for ex in self.lazy_examples(root, split):
            img = ex.load()
            yield Example(transform(img) if transform else img, ex.label, ex.key, ex.meta)

    def lazy_examples(self, root, split=None) -> Iterator[LazyExample]:
        for path, label in self._files(root):
            yield LazyExample(f"{label}/{path.name}", label, {}, lambda path=path: Image.open(path).convert("RGB"), path.read_bytes)


class ClipHead(torch.nn.Module, Classifier):
    """open_clip image tower + a fixed random 1000-way head (what a zero-shot CLIP computes)."""

    def __init__(self, clip_model: torch.nn.Module, head: torch.Tensor, name: str) -> None:
        super().__init__()
        self.clip, self.name, self.label_space, self.num_classes = clip_model, name, "imagenet-1k", 1000
        self.preprocess_spec = CLIP_SPEC
        self.register_buffer("head", head)

    def logits(self, images):
        f = self.clip.encode_image(images)
        return 100.0 * torch.nn.functional.normalize(f, dim=-1) @ self.head


class TinyNet(torch.nn.Module, Classifier):
    """Average-pool to 7x7 and a linear layer: next to no compute, so loading is all that shows."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.label_space, self.num_classes = name, "imagenet-1k", 1000
        self.preprocess_spec = CLIP_SPEC
        self.fc = torch.nn.Linear(3 * 7 * 7, 1000)

    def logits(self, images):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(images, 7).flatten(1))

    def encode_image(self, images):  # the shape CLIP_benchmark's loop calls
        return self.logits(images)


def clip_benchmark_loop(root: Path, model: torch.nn.Module, head: torch.Tensor | None) -> float:
    """CLIP_benchmark's zero-shot loop (clip_benchmark/metrics/zeroshot_classification.py run_classification)."""
    import open_clip.transform as oct
    from torchvision.datasets import ImageFolder

    preprocess = oct.image_transform(224, is_train=False)
    dataset = ImageFolder(str(root / "bench"), transform=preprocess)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=WORKERS)
    start = time.perf_counter()
    pred, true = [], []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for images, target in loader:
            features = model.encode_image(images)
            if head is not None:
                features = torch.nn.functional.normalize(features, dim=-1)
                logits = 100.0 * features @ head
            else:
                logits = features
            true.append(target.cpu())
            pred.append(logits.float().cpu())
    torch.cat(pred), torch.cat(true)
    return len(dataset) / (time.perf_counter() - start)


def bench_config(root: Path, run_dir: Path, cache: Path, shifts: tuple[str, ...] = ("bench",), decoder: str = "pil") -> RunConfig:
    return RunConfig(
        shifts=shifts, data_root=str(root), run_dir=str(run_dir), batch_size=BATCH, workers=WORKERS,
        precision="bf16", cache_dir=str(cache), progress=False, decoder=decoder,
    )  # fmt: skip


def engine_pass(root: Path, run_dir: Path, cache: Path, classifier: Classifier, decoder: str = "pil") -> float:
    engine = Engine(bench_config(root, run_dir, cache, decoder=decoder), get_shift=BenchShift)
    start = time.perf_counter()
    engine.run([ModelSource(classifier.name, classifier.name, lambda: classifier)])
    return N_IMAGES / (time.perf_counter() - start)


def model_only(classifier: Classifier, n: int) -> float:
    """img/s of the engine's forward alone on uint8 batches already in memory (one warm-up batch)."""
    forward = make_forward(classifier, torch.device("cpu"), "bf16")
    batch = torch.randint(0, 256, (BATCH, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    forward(batch)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        forward(batch[: min(BATCH, n - i)])
    return n / (time.perf_counter() - start)


def run_all(tmp_path: Path, make_model, head) -> dict[str, float]:
    root = write_jpegs(tmp_path / "data")
    torch.set_num_threads(2)
    model = make_model("first")
    # Warm-up (thread pools, page cache) outside the timings.
    clip_benchmark_loop(root, model.clip if isinstance(model, ClipHead) else model, head)
    cb = clip_benchmark_loop(root, model.clip if isinstance(model, ClipHead) else model, head)
    first = engine_pass(root, tmp_path / "run", tmp_path / "cache", model)
    model.name = "second"
    cached = engine_pass(root, tmp_path / "run", tmp_path / "cache", model)
    model.name = "batched-decode"
    first_tv = engine_pass(root, tmp_path / "run", tmp_path / "cache-tv", model, decoder="torchvision")
    limit = model_only(model, N_IMAGES)
    return {"clip_benchmark_img_s": cb, "first_pass_img_s": first, "first_pass_torchvision_decoder_img_s": first_tv,
            "cached_pass_img_s": cached, "model_only_img_s": limit,
            "first_vs_clip_benchmark": first / cb, "first_torchvision_vs_clip_benchmark": first_tv / cb,
            "first_torchvision_vs_first_pil": first_tv / first, "cached_vs_clip_benchmark": cached / cb,
            "cached_vs_model_only": cached / limit}  # fmt: skip


def report(benchmark, label: str, figures: dict[str, float]) -> None:
    benchmark.extra_info.update({k: round(v, 3) for k, v in figures.items()})
    print(f"\n{label}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()))


@pytest.mark.slow
def test_vit_b32_first_and_cached_pass_against_clip_benchmark(benchmark, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    clip_model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    head = torch.nn.functional.normalize(torch.randn(512, 1000), dim=0)
    figures = benchmark.pedantic(lambda: run_all(tmp_path, lambda n: ClipHead(clip_model, head, n), head), rounds=1, iterations=1)
    report(benchmark, "ViT-B-32", figures)


@pytest.mark.slow
def test_tiny_net_first_and_cached_pass_against_clip_benchmark(benchmark, tmp_path):
    torch.manual_seed(0)
    figures = benchmark.pedantic(lambda: run_all(tmp_path, TinyNet, None), rounds=1, iterations=1)
    report(benchmark, "tiny net", figures)


def wiseft_sweep(tmp_path: Path, make_model, alphas: list[float]) -> dict[str, float]:
    """A WiSE-FT sweep over ``alphas`` x two shifts from a cold cache, through ``shiftbench
    wiseft``'s own sources, against the model-only time for the same number of images."""
    from harness import registry
    from harness.sweeps import wiseft_sources

    shifts = ("bench", "bench-b")
    root = write_jpegs(tmp_path / "data")
    write_jpegs(root, seed=1, name="bench-b")
    torch.set_num_threads(2)
    with registry.models.scoped({"bench": lambda arg, **_: make_model(arg)}):
        sources = wiseft_sources(("bench:zs", {}), ("bench:ft", {}), alphas)
        engine = Engine(bench_config(root, tmp_path / "wiseft", tmp_path / "cache", shifts), get_shift=BenchShift)
        start = time.perf_counter()
        engine.run(sources)
        elapsed = time.perf_counter() - start
    n = len(alphas) * len(shifts) * N_IMAGES
    limit = model_only(make_model("zs"), n)
    return {"cells": len(alphas) * len(shifts), "images": n, "sweep_s": elapsed, "sweep_img_s": n / elapsed,
            "model_only_s": n / limit, "sweep_vs_model_only": (n / elapsed) / limit}  # fmt: skip


def vit_b32(seed: int) -> ClipHead:
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(seed)
    clip_model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    head = torch.nn.functional.normalize(torch.randn(512, 1000), dim=0)
    return ClipHead(clip_model, head, f"vit-b32-{seed}")


def seeded_tiny_net(seed: int) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(f"tiny-{seed}")


@pytest.mark.slow
def test_vit_b32_wiseft_sweep_against_the_model_only_time(benchmark, tmp_path):
    figures = benchmark.pedantic(lambda: wiseft_sweep(tmp_path, lambda arg: vit_b32(0 if arg == "zs" else 1), [0.0, 0.5, 1.0]), rounds=1, iterations=1)
    report(benchmark, "ViT-B-32 WiSE-FT 3 alphas x 2 shifts", figures)


@pytest.mark.slow
def test_tiny_net_wiseft_sweep_against_the_model_only_time(benchmark, tmp_path):
    alphas = [round(0.1 * i, 1) for i in range(11)]
    figures = benchmark.pedantic(lambda: wiseft_sweep(tmp_path, lambda arg: seeded_tiny_net(0 if arg == "zs" else 1), alphas), rounds=1, iterations=1)
    report(benchmark, "tiny net WiSE-FT 11 alphas x 2 shifts", figures)
