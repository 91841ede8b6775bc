"""Weight-space methods: WiSE-FT interpolation, uniform soups, greedy soups.

Everything is computed in fp32 (fp64 per-tensor accumulators for averages) over identical key
sets, heads included, as in the WiSE-FT and model-soups reference code. Averages stream key
by key across lazily-read checkpoints, so peak memory is about one fp32 model whatever the
number of ingredients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from harness.files import atomic_write_text
from models.checkpoints import LazyStateDict


def open_state(source) -> Mapping[str, torch.Tensor]:
    """A path (read lazily) or an in-memory state dict."""
    if isinstance(source, Mapping):
        return source
    return LazyStateDict(source)


def _label(source, i: int) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"state dict #{i}"


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """Without reading the tensor where the mapping can say (lazy checkpoints and views of them)."""
    shape = getattr(state, "shape", None)
    return shape(key) if callable(shape) else tuple(state[key].shape)


def check_compatible(states: Sequence[Mapping[str, torch.Tensor]], labels: Sequence[str],
                     only: Sequence[str] | None = None) -> None:
    """Identical key sets and shapes (of ``only`` when given), or a ValueError naming the files."""
    ref_keys = set(states[0]) if only is None else set(only)
    for state, label in zip(states[1:], labels[1:], strict=True):
        keys = set(state) if only is None else set(only) & set(state)
        if keys != ref_keys:
            missing = sorted(ref_keys - keys)
            extra = sorted(keys - ref_keys)
            raise ValueError(
                f"{label} and {labels[0]} have different parameter names "
                f"(missing in {label}: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                f"only in {label}: {extra[:5]}{' ...' if len(extra) > 5 else ''}); "
                "weight-space merges need checkpoints of the same architecture saved the same way")
        for key in sorted(ref_keys):
            a, b = _shape(states[0], key), _shape(state, key)
            if a != b:
                raise ValueError(f"{label} and {labels[0]}: parameter {key!r} has shape {list(b)} vs {list(a)}; "
                                 "the checkpoints are of different architectures")


def _finite(t: torch.Tensor, key: str, label: str) -> torch.Tensor:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{label}: non-finite (NaN/inf) values in {key!r}; the checkpoint is corrupt or diverged")
    return t


def interpolate(theta0, theta1, alpha: float, select: Callable[[str], bool] | None = None,
                labels: tuple[str, str] | None = None) -> dict[str, torch.Tensor]:
    """WiSE-FT: ``(1 - alpha) * theta0 + alpha * theta1`` for every selected key, in fp32.

    ``alpha = 0`` and ``1`` return the endpoints exactly (as fp32). Unselected keys (PAINT's
    encoder-only patching leaves the heads alone) and integer buffers come from ``theta0``.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    s0, s1 = open_state(theta0), open_state(theta1)
    names = labels or (_label(theta0, 0), _label(theta1, 1))
    check_compatible([s0, s1], names)
    out: dict[str, torch.Tensor] = {}
    for key in s0:
        a = _finite(s0[key], key, names[0])
        if not a.is_floating_point() or (select is not None and not select(key)):
            out[key] = a.float().clone() if a.is_floating_point() else a.clone()
            continue
        b = _finite(s1[key], key, names[1])
        a32, b32 = a.float(), b.float()
        if alpha == 0.0:
            out[key] = a32.clone()
        elif alpha == 1.0:
            out[key] = b32.clone()
        else:
            out[key] = (1.0 - alpha) * a32 + alpha * b32
    return out


def average(sources: Sequence, keys: Sequence[str] | None = None, progress: bool = False,
            desc: str = "averaging") -> dict[str, torch.Tensor]:
    """Uniform soup: the mean of every ingredient's parameters, streamed key by key.

    Each output tensor is summed in fp64 and divided once, so a soup of identical models is
    exactly that model; at most one tensor per ingredient is resident besides the output.
    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) come from the first ingredient.
    ``keys`` restricts the soup to those parameters (e.g. the image tower and head).
    """
    if not sources:
        raise ValueError("a soup needs at least one ingredient")
    states = [open_state(s) for s in sources]
    labels = [_label(s, i) for i, s in enumerate(sources)]
    check_compatible(states, labels, keys)
    n = len(states)
    out: dict[str, torch.Tensor] = {}
    keys = list(states[0]) if keys is None else list(keys)
    for key in tqdm(keys, desc=desc, unit="tensor", disable=not progress):
        first = _finite(states[0][key], key, labels[0])
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = first.to(torch.float64)
        del first
        for state, label in zip(states[1:], labels[1:], strict=True):
            acc.add_(_finite(state[key], key, label))  # promoted element-wise, no fp64 copy
        out[key] = acc.div_(n).to(torch.float32)
        del acc
    return out


@dataclass
class GreedyStep:
    ingredient: str
    heldout_score: float  # the candidate soup's held-out score (the first: the ingredient's own)
    accepted: bool
    best_so_far: float


@dataclass
class GreedySoupRecord:
    """Order, decisions and scores of a greedy soup: enough to rebuild and audit it."""

    heldout: str
    order: list[str]
    individual_scores: dict[str, float]
    steps: list[GreedyStep] = field(default_factory=list)
    #: name -> {"file", "path", "sha256"}: what each name was, so the soup can be rebuilt
    #: from the same files even after they are moved or renamed (``models.soups.select_accepted``).
    ingredients: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return [s.ingredient for s in self.steps if s.accepted]

    @property
    def final_score(self) -> float:
        return self.steps[-1].best_so_far if self.steps else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["accepted"] = self.accepted
        d["final_score"] = self.final_score
        return d

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> GreedySoupRecord:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            steps = [GreedyStep(**s) for s in d["steps"]]
            entries = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in d.get("ingredients", {}).items()}
            return cls(heldout=d["heldout"], order=list(d["order"]),
                       individual_scores={k: float(v) for k, v in d["individual_scores"].items()}, steps=steps,
                       ingredients=entries)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a greedy soup record ({exc}); expected the JSON written by greedy_soup") from exc


def greedy_soup(ingredients: Mapping[str, object], individual_scores: Mapping[str, float],
                evaluate: Callable[[dict[str, torch.Tensor]], float], heldout: str,
                progress: bool = False, entries: Mapping[str, dict[str, str]] | None = None,
                ) -> tuple[dict[str, torch.Tensor], GreedySoupRecord]:
    """Greedy soup (model soups, Wortsman et al. 2022, Recipe 1).

    Sort ingredients by held-out score, descending (ties keep the given order); start from the
    best; for each next one evaluate the uniform average of the accepted set plus it on the
    held-out data and keep it only if the score is *strictly* greater than the best so far.
    ``individual_scores`` and ``evaluate`` must both be on held-out ID data (``heldout`` names
    it), never on a reported shift. ``entries`` (name -> file name and sha256) go into the
    record. Returns the soup and the record of every decision.
    """
    names = list(ingredients)
    if not names:
        raise ValueError("a greedy soup needs at least one ingredient")
    missing = [n for n in names if n not in individual_scores]
    if missing:
        raise ValueError(f"no held-out score for ingredients {missing}; score each ingredient on {heldout} first")
    order = sorted(names, key=lambda n: -float(individual_scores[n]))
    record = GreedySoupRecord(heldout=heldout, order=order,
                              individual_scores={n: float(individual_scores[n]) for n in names},
                              ingredients={n: dict(entries[n]) for n in names} if entries else {})
    best = float(individual_scores[order[0]])
    record.steps.append(GreedyStep(order[0], best, True, best))
    accepted = [order[0]]
    for name in tqdm(order[1:], desc="greedy soup", unit="ingredient", disable=not progress):
        candidate = average([ingredients[n] for n in accepted + [name]])
        score = float(evaluate(candidate))
        keep = score > best
        if keep:
            accepted.append(name)
            best = score
        record.steps.append(GreedyStep(name, score, keep, best))
    return average([ingredients[n] for n in accepted]), record
