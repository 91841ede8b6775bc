"""Decode + preprocess throughput: folder form vs packed webdataset shards.

Run with ``pytest tests/benchmarks --benchmark-only``. Both readers are timed in the same run; the
shard reader's speed is recorded as a ratio to the folder reader (``extra_info``), never asserted.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from harness.api import PreprocessSpec
from harness.transforms import eval_transform
from shifts.imagenet_shifts import ImageNetR
from shifts.pack import pack

SPEC = PreprocessSpec(image_size=32, resize_size=32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """ImageNet-R in its raw layout with 2 textured 64x48 JPEGs per class (400 images), and packed."""
    root = tmp_path_factory.mktemp("bench")
    shift = ImageNetR()
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(shift.spec.class_map.targets):
        for i in range(2):
            arr = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            path = root / "imagenet-r" / wnid / f"bench_{k}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
    pack(shift, root, root / "wds" / "imagenet-r", maxcount=100, progress=False)
    return root


def _read_all(root, form, transform):
    return sum(1 for _ in ImageNetR().examples(root, transform, form=form))


def _time(fn, rounds=3):
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("form", ["folder", "wds"])
def test_decode_preprocess_throughput(benchmark, data_root, form):
    transform = eval_transform(SPEC)
    baseline = _time(lambda: _read_all(data_root, "folder", transform))
    n = benchmark.pedantic(_read_all, args=(data_root, form, transform), rounds=3, iterations=1)
    assert n == 400
    benchmark.extra_info["images"] = n
    benchmark.extra_info["speed_vs_folder"] = baseline / benchmark.stats.stats.min
