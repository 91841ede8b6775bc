"""``--model fake:NAME``: deterministic tiny classifiers for engine tests (no weights files).

Logits are a fixed random linear map (seeded by ``seed``, default 0) of the image's 4x4
average-pooled pixels, so they depend on every image, are identical across runs and
machines, and cost nothing. ``num_classes`` (default 1000), ``label_space`` (default
``imagenet-1k``) and ``image_size`` (default 32) are options.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.api import Classifier, PreprocessSpec
from models.options import Options

FAKE_OPTIONS = ("num_classes", "label_space", "image_size", "seed", "name")


class FakeClassifier(Classifier):
    def __init__(self, name: str = "fake", num_classes: int = 1000, label_space: str = "imagenet-1k",
                 image_size: int = 32, seed: int = 0) -> None:
        self.name = name
        self.num_classes = num_classes
        self.label_space = label_space
        self.seed = seed
        self.preprocess_spec = PreprocessSpec(image_size=image_size, resize_size=image_size)
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(num_classes, 3 * 16, generator=g)
        self.bias = torch.randn(num_classes, generator=g) * 0.1

    def logits(self, images: Any) -> torch.Tensor:
        x = torch.as_tensor(images).float()
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images [B, 3, H, W], got {list(x.shape)}")
        pooled = F.adaptive_avg_pool2d(x, 4).flatten(1)
        # Runs wherever its input is (the engine places the input); the map is tiny to copy.
        return F.linear(pooled, self.weight.to(x.device), self.bias.to(x.device))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label_space": self.label_space, "num_classes": self.num_classes,
                "tags": ["fake"], "seed": self.seed, "weights_sha256": None, "alpha": None,
                "ingredients": None, "head": None,
                "preprocess": self.preprocess_spec.to_dict()}


def fake(arg: str, **options: str) -> FakeClassifier:
    opts = Options("fake", options, FAKE_OPTIONS)
    clf = FakeClassifier(name=opts.get("name", f"fake:{arg}" if arg else "fake"),
                         num_classes=opts.int("num_classes", 1000),
                         label_space=opts.get("label_space", "imagenet-1k"),
                         image_size=opts.int("image_size", 32, lo=4),
                         seed=opts.int("seed", 0, lo=0))
    opts.done()
    return clf
