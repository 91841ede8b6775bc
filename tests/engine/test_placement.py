"""The engine places models; every classifier then runs where it was placed (``meta`` stands
in for a GPU, so these run on any machine)."""

from __future__ import annotations

import torch

from harness.api import PreprocessSpec
from harness.engine.numerics import place


def test_ensemble_members_are_moved_by_the_engine():
    from models.classifiers import ModuleClassifier
    from models.ensembles import EnsembleClassifier

    spec = PreprocessSpec(32, 32)

    def member() -> ModuleClassifier:
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 5))
        return ModuleClassifier("m", net, 5, spec, "ls", {})

    ens = EnsembleClassifier([member(), member()])
    assert isinstance(ens, torch.nn.Module), "the engine only calls .to(device) on torch modules"
    place(ens, torch.device("meta"))
    assert all(p.device.type == "meta" for m in ens.members for p in m.parameters())
    out = ens.logits(torch.zeros(2, 3, 32, 32, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (2, 5)


def test_fake_classifier_follows_its_input_device():
    from models.fake import FakeClassifier

    x = torch.zeros(2, 3, 32, 32, device="meta")
    assert FakeClassifier().logits(x).device.type == "meta"
