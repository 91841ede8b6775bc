"""Output-space ensembles: the mean of several classifiers' logits (the model-soups baseline).

``ensemble_predictions`` combines stored predictions (no model is run: the usual path, since
every member is evaluated anyway); ``EnsembleClassifier`` runs the members on one batch, which
needs them to share a preprocessing. ``--model ensemble:`` takes ``members=members.json``, a
list of ``{"model": "NAME:ARG", "args": {"key": "value"}}`` entries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.api import Classifier, Predictions
from models.options import Options


class EnsembleClassifier(torch.nn.Module, Classifier):
    """A module holding its members, so the engine's ``.to(device)`` (and dtype) moves them all."""

    def __init__(self, members: Sequence[Classifier], name: str = "ensemble") -> None:
        torch.nn.Module.__init__(self)
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0]
        for m in members[1:]:
            if (m.label_space, m.num_classes) != (first.label_space, first.num_classes):
                raise ValueError(f"ensemble members disagree on outputs: {first.name} is {first.label_space}/"
                                 f"{first.num_classes}, {m.name} is {m.label_space}/{m.num_classes}")
            if m.preprocess_spec != first.preprocess_spec:
                raise ValueError(f"ensemble members {first.name} and {m.name} preprocess images differently; "
                                 "evaluate each and combine the stored predictions (models.ensembles.ensemble_predictions)")
        self.members = list(members)
        # Torch members are registered as submodules; others (plain Classifiers) follow their input.
        self.torch_members = torch.nn.ModuleList(m for m in members if isinstance(m, torch.nn.Module))
        self.name = name
        self.label_space = first.label_space
        self.num_classes = first.num_classes
        self.preprocess_spec = first.preprocess_spec

    def logits(self, images: Any) -> torch.Tensor:
        total = None
        for m in self.members:
            out = torch.as_tensor(m.logits(images)).float()
            total = out if total is None else total + out
        return total / len(self.members)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label_space": self.label_space, "num_classes": self.num_classes,
                "tags": ["ensemble"], "alpha": None, "weights_sha256": None, "head": None,
                "recipe": "mean of logits", "ingredients": [m.describe() for m in self.members],
                "preprocess": self.preprocess_spec.to_dict()}


def align_keys(ref: Predictions, other: Predictions) -> np.ndarray:
    """Indices into ``other`` that put its rows in ``ref``'s key order (same key sets required)."""
    if len(ref) != len(other) or len(set(map(str, ref.keys))) != len(ref):
        raise ValueError(f"{ref.model} and {other.model} on {ref.shift}: {len(ref)} vs {len(other)} examples "
                         "(or duplicate keys); predictions must cover the same examples")
    index = {str(k): i for i, k in enumerate(other.keys)}
    try:
        return np.asarray([index[str(k)] for k in ref.keys], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"{other.model} on {ref.shift} has no prediction for key {exc.args[0]!r}") from None


def ensemble_predictions(members: Sequence[Predictions], model: str | None = None) -> Predictions:
    """Mean of the members' logits per example, matched by key (fp32 sum, stored as fp16)."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    ref = members[0]
    total = ref.logits.astype(np.float32)
    for p in members[1:]:
        if p.shift != ref.shift or p.logits.shape[1] != ref.logits.shape[1]:
            raise ValueError(f"cannot ensemble {ref.model} ({ref.shift}, {ref.logits.shape[1]} classes) with "
                             f"{p.model} ({p.shift}, {p.logits.shape[1]} classes)")
        order = align_keys(ref, p)
        if not np.array_equal(ref.labels, p.labels[order]):
            raise ValueError(f"{ref.model} and {p.model} disagree on labels for the same keys")
        total += p.logits[order].astype(np.float32)
    name = model or "ensemble(" + ",".join(p.model for p in members) + ")"
    return Predictions(name, ref.shift, ref.keys, ref.labels, (total / len(members)).astype(np.float16), dict(ref.meta))


def ensemble(arg: str, **options: str) -> EnsembleClassifier:
    from harness.registry import get_model_factory

    opts = Options("ensemble", options, ("members", "name"))
    path = opts.path("members", "JSON list of {model, args} member specs")
    name = opts.get("name", f"ensemble:{arg}" if arg else "ensemble")
    opts.done()
    try:
        specs = json.loads(path.read_text())
        members = []
        for spec in specs:
            factory_name, _, factory_arg = spec["model"].partition(":")
            args = {str(k): str(v) for k, v in spec.get("args", {}).items()}
            members.append((factory_name, factory_arg, args))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: expected a JSON list of {{\"model\": \"NAME:ARG\", \"args\": {{...}}}} ({exc})") from None
    return EnsembleClassifier([get_model_factory(f)(a, **kw) for f, a, kw in members], name=name)
