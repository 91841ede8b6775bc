"""Synthetic predictions whose accuracies and agreements are known exactly.

Nested construction: images are ordered by a fixed difficulty; a model with accuracy ``k/n`` is
right on exactly the ``k`` easiest images, and wrong ones are answered with a class no other
model uses there. Then every pair agrees on exactly the images both get right:
``agreement(h, h') = min(acc(h), acc(h'))``. If OOD accuracies are ``Phi(a Phi^-1(acc_id) + b)``,
the OOD agreements lie on the same probit line as the accuracies (Phi is monotone), so
agreement-on-the-line holds exactly, up to rounding accuracies to whole images.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def nested_predictions(acc: np.ndarray, n: int, classes: int, rng: np.random.Generator,
                       shared_mistakes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n], predictions [M, n]) with model i right on round(acc[i] * n) nested images.

    ``shared_mistakes``: every model gives the same wrong answer, so models also agree where
    they are all wrong (agreement is then no longer min(acc))."""
    if classes <= len(acc) + 1:
        raise ValueError("need more classes than models + 1 for distinct wrong answers")
    labels = rng.integers(0, classes, size=n)
    order = rng.permutation(n)
    preds = []
    for i, a in enumerate(acc):
        right = np.zeros(n, dtype=bool)
        right[order[: int(round(a * n))]] = True
        wrong = (labels + 1 + (0 if shared_mistakes else i)) % classes
        preds.append(np.where(right, labels, wrong))
    return labels, np.stack(preds)


def on_the_line(id_acc: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """OOD accuracies exactly on the probit line."""
    return norm.cdf(slope * norm.ppf(id_acc) + intercept)


def logits_for(preds: np.ndarray, width: int, rng: np.random.Generator, margin: float = 4.0) -> np.ndarray:
    """Float16-safe logits [n, width] whose argmax is ``preds``."""
    logits = rng.normal(0, 1, size=(len(preds), width)).astype(np.float32)
    logits[np.arange(len(preds)), preds] = logits.max(axis=1) + margin
    return logits


def write_run(run_dir, cells: dict, infos: dict | None = None) -> None:
    """A run directory through the real store and scorer: ``cells[(model, shift)] = (labels, preds)``
    over ImageNet's 1000 classes (keys ``img{i}``), each row scored as ``shiftbench run`` scores it."""
    from harness import metrics
    from harness.api import Predictions
    from harness.engine.run import ScoreTask, make_result, plan_tasks, registry_specs, score_task
    from harness.engine.store import RunDir

    run = RunDir(run_dir)
    spec_of = registry_specs("")
    rng = np.random.default_rng(7)
    rows = []
    shifts = list(dict.fromkeys(s for _, s in cells))
    tasks = plan_tasks(shifts, spec_of)
    for (model, shift), (labels, preds) in cells.items():
        keys = np.array([f"img{i:06d}" for i in range(len(labels))])
        p = Predictions(model, shift, keys, np.asarray(labels, dtype=np.int64), logits_for(preds, 1000, rng).astype(np.float16))
        info = (infos or {}).get(model, {"tags": ["standard"], "arch": model})
        sha = run.save_predictions(p, "synthetic", {"model": info})
        if (np.asarray(labels) < 0).all():
            continue
        for task in [t for t in tasks if t.shift == shift] or [ScoreTask(shift, shift)]:
            scored, sspec, m, g = score_task(task, p, spec_of, metrics)
            rows.append(make_result(model, task, scored, spec_of(shift), sspec, m, g, sha,
                                    {"config_hash": "synthetic", "model": info}, len(scored)))
    run.append_results(rows)
