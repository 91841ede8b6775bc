"""Official metrics, computed from stored Predictions (predict once, score many times).

All metrics are fractions in [0, 1] except ``nll`` (nats). Metric names a :class:`ShiftSpec` may list:

- ``top1``, ``top5`` (any ``topK``): top-k accuracy; ties rank the lower class index first, so
  ``top1`` equals accuracy of ``argmax``.
- ``macro_f1``: WILDS' ``F1-macro_all``: F1 averaged over the labels present in the true labels
  (a class never seen in the ground truth does not count, even if predicted).
- ``macro_recall``: WILDS' ``recall-macro_all``, over the same labels.
- ``acc:<field>``: per-group accuracies over the metadata column ``<field>``, reported as
  ``acc:<field>=<group>`` (present groups only).
- ``worst_acc:<field>`` or ``worst_acc:<field>!<g1>,<g2>``: the lowest per-group accuracy over the
  groups present in ``<field>``, leaving out the listed groups (FMoW: ``worst_acc:region!Other``).
  Empty groups are never scored as 0.0; they simply do not exist.

Group counts are returned as ``{"<field>=<group>": n}`` for every grouped metric.

Every labelled row also gets the calibration metrics of :data:`CALIBRATION_METRICS` (softmax over
the shift's own classes, after the class map): ``ece``, the expected calibration error of the
top-1 confidence in 15 equal-width bins (Guo et al., 2017), and ``nll``, the mean negative
log-likelihood of the true class in nats.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

from harness.api import ClassMap, Predictions, ShiftSpec

#: Output width of the label spaces a class map can project from.
LABEL_SPACE_WIDTHS: Mapping[str, int] = {"imagenet-1k": 1000}

_TOPK = re.compile(r"^top(\d+)$")

#: Metrics every labelled row gets besides its spec's: calibration of the softmax on the shift's classes.
CALIBRATION_METRICS = ("ece", "nll")
#: Equal-width confidence bins of ``ece`` (the usual 15, Guo et al. 2017).
ECE_BINS = 15


def _as_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, C], got shape {logits.shape}")
    if np.isnan(logits).any():
        raise ValueError(
            "logits contain NaN; the model produced invalid outputs (check weights and precision)"
        )
    return logits


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label ranks within the top ``k`` logits.

    Rank = number of classes scoring strictly higher, plus tied classes with a lower index
    (the tie-break of ``argmax``), so the result never depends on a sort's stability.
    """
    logits = _as_logits(logits)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = logits.shape
    if len(labels) != n:
        raise ValueError(f"{n} logit rows but {len(labels)} labels")
    if k < 1 or k > c:
        raise ValueError(f"top-{k} accuracy needs 1 <= k <= number of classes ({c})")
    if n == 0:
        raise ValueError("cannot score zero examples")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(
            f"labels must lie in [0, {c}); found range [{labels.min()}, {labels.max()}]"
        )
    own = logits[np.arange(n), labels][:, None]
    higher = (logits > own).sum(axis=1)
    earlier_ties = ((logits == own) & (np.arange(c)[None, :] < labels[:, None])).sum(axis=1)
    return float(np.mean(higher + earlier_ties < k))


def format_metric(name: str, value: float) -> str:
    """A metric for people: fractions in percent, ``nll`` in nats as is."""
    return f"{value:.3f}" if name == "nll" else f"{100 * value:.2f}"


#: Rows per block when computing softmax statistics (bounds float64 temporaries to ~64 MB at 1000 classes).
_BLOCK = 8192


def softmax_stats(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``softmax(logits / T)``: the argmax (lowest index on ties), its probability and
    the log-probability of the label, in float64 and in blocks of rows."""
    logits = _as_logits(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(logits):
        raise ValueError(f"{len(logits)} logit rows but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("cannot score zero examples")
    pred = np.empty(len(labels), dtype=np.int64)
    conf = np.empty(len(labels))
    log_label = np.empty(len(labels))
    for lo in range(0, len(labels), _BLOCK):
        z = logits[lo : lo + _BLOCK].astype(np.float64) / float(temperature)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        rows = np.arange(len(z))
        pred[lo : lo + _BLOCK] = z.argmax(axis=1)
        conf[lo : lo + _BLOCK] = np.exp(z[rows, pred[lo : lo + _BLOCK]] - log_norm)
        log_label[lo : lo + _BLOCK] = z[rows, labels[lo : lo + _BLOCK]] - log_norm
    return pred, conf, log_label


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """``ece`` and ``nll`` from one pass over the softmax."""
    pred, conf, log_label = softmax_stats(logits, labels, temperature)
    return {"ece": _ece(pred, conf, labels, ECE_BINS), "nll": float(-log_label.mean())}


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS, temperature: float = 1.0) -> float:
    """ECE of the top-1 softmax confidence: bins ``((m-1)/M, m/M]`` of equal width,
    ``sum_m |B_m|/n * |accuracy(B_m) - mean confidence(B_m)|`` (Naeini et al. 2015; Guo et al. 2017).

    The prediction is ``argmax`` (lowest index on ties), as for ``top1``."""
    pred, conf, _ = softmax_stats(logits, labels, temperature)
    return _ece(pred, conf, labels, bins)


def _ece(pred: np.ndarray, conf: np.ndarray, labels: np.ndarray, bins: int) -> float:
    correct = (pred == np.asarray(labels, dtype=np.int64)).astype(np.float64)
    # bin m holds confidences in ((m-1)/M, m/M]; confidence is at least 1/C > 0
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.abs(np.bincount(idx, correct, minlength=bins) - np.bincount(idx, conf, minlength=bins))
    return float(gap.sum() / len(pred))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(logits / T)[label]`` in nats."""
    return float(-softmax_stats(logits, labels, temperature)[2].mean())


def _per_class_counts(
    pred: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(
            f"predictions {pred.shape} and labels {labels.shape} must be 1-D of equal length"
        )
    if len(labels) == 0:
        raise ValueError("cannot score zero examples")
    present = np.unique(labels)
    width = int(max(pred.max(), labels.max())) + 1
    tp = np.bincount(labels[pred == labels], minlength=width)
    predicted = np.bincount(pred, minlength=width)
    actual = np.bincount(labels, minlength=width)
    return present, tp[present], predicted[present], actual[present]


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 over the classes present in ``labels`` (WILDS ``F1-macro_all``).

    A class with no predictions has precision 0 and F1 0 (sklearn's ``zero_division=0``).
    """
    _, tp, predicted, actual = _per_class_counts(pred, labels)
    precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
    recall = tp / actual
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(tp)), where=denom > 0)
    return float(f1.mean())


def macro_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    """Recall averaged over the classes present in ``labels`` (WILDS ``recall-macro_all``)."""
    _, tp, _, actual = _per_class_counts(pred, labels)
    return float((tp / actual).mean())


def group_accuracies(
    pred: np.ndarray, labels: np.ndarray, groups: np.ndarray, exclude: Iterable[Hashable] = ()
) -> tuple[dict[Hashable, float], dict[Hashable, int], float]:
    """Per-group accuracy and count for every group present, and the worst accuracy.

    Excluded groups are still reported but never chosen as worst; groups with no examples do
    not appear at all (WILDS scores them 0 and then skips them). Raises if nothing is left.
    """
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if not (len(pred) == len(labels) == len(groups)):
        raise ValueError(
            f"{len(pred)} predictions, {len(labels)} labels and {len(groups)} group values differ in length"
        )
    correct = pred == labels
    accs: dict[Hashable, float] = {}
    counts: dict[Hashable, int] = {}
    for g in np.unique(groups):
        mask = groups == g
        key = g.item() if hasattr(g, "item") else g
        accs[key] = float(correct[mask].mean())
        counts[key] = int(mask.sum())
    excluded = {str(e) for e in exclude}
    eligible = [a for g, a in accs.items() if str(g) not in excluded]
    if not eligible:
        raise ValueError(
            f"no group left to take the worst of (groups present: {sorted(map(str, accs))}, excluded: {sorted(excluded)})"
        )
    return accs, counts, min(eligible)


def _parse_group_metric(name: str) -> tuple[str, tuple[str, ...]]:
    body = name.split(":", 1)[1]
    field, _, excl = body.partition("!")
    return field, tuple(e for e in excl.split(",") if e)


def source_width(label_space: str, class_map: ClassMap) -> int | None:
    """Known width of a label space a class map projects from (None when unknown)."""
    return LABEL_SPACE_WIDTHS.get(label_space, LABEL_SPACE_WIDTHS.get(class_map.source))


def shift_logits(preds: Predictions, spec: ShiftSpec) -> np.ndarray:
    """The predictions' logits on the shift's own classes: projected through the class map.

    Refuses a model whose width does not match the label space the spec expects, e.g. a
    1000-way ImageNet model on a 182-class WILDS shift with no class map.
    """
    logits = _as_logits(preds.logits)
    width = logits.shape[1]
    where = f"predictions {preds.model}/{preds.shift} on {spec.name}"
    cm = spec.class_map
    space_width = LABEL_SPACE_WIDTHS.get(spec.label_space)
    if cm is None and space_width is not None and space_width != spec.num_classes:
        raise ValueError(
            f"{where}: the spec has no class map from {spec.label_space} onto its {spec.num_classes} classes; "
            "use the spec completed from the data (Shift.spec_for(data_root))"
        )
    if cm is None:
        if width != spec.num_classes:
            raise ValueError(
                f"{where}: model outputs {width} classes but the shift has {spec.num_classes} "
                f"({spec.label_space}) and no class map; use a head for {spec.label_space}"
            )
        return logits
    expected = source_width(spec.label_space, cm)
    if expected is not None and width != expected:
        raise ValueError(
            f"{where}: model outputs {width} classes but the class map {cm.name!r} projects from "
            f"{cm.source} ({expected} classes); use a {cm.source} head"
        )
    if max(cm.source_indices) >= width:
        raise ValueError(
            f"{where}: class map {cm.name!r} uses source index {max(cm.source_indices)} but the model has {width} outputs"
        )
    return cm.project(logits)


def score(preds: Predictions, spec: ShiftSpec) -> tuple[dict[str, float], dict[str, int]]:
    """The spec's metrics (fractions) and group counts from full-width predictions."""
    logits = shift_logits(preds, spec)
    labels = np.asarray(preds.labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError(f"predictions {preds.model}/{preds.shift}: no examples to score")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise ValueError(
            f"predictions {preds.model}/{preds.shift}: labels span [{labels.min()}, {labels.max()}] "
            f"outside {spec.name}'s {spec.num_classes} classes"
        )
    pred = logits.argmax(axis=1)
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in spec.metrics:
        m = _TOPK.match(name)
        if m:
            metrics[name] = topk_accuracy(logits, labels, int(m.group(1)))
        elif name == "macro_f1":
            metrics[name] = macro_f1(pred, labels)
        elif name == "macro_recall":
            metrics[name] = macro_recall(pred, labels)
        elif name.startswith(("acc:", "worst_acc:")):
            field, exclude = _parse_group_metric(name)
            if field not in preds.meta:
                raise ValueError(
                    f"predictions {preds.model}/{preds.shift}: metric {name!r} needs metadata column "
                    f"{field!r}, found {sorted(preds.meta)}; rerun prediction to record it"
                )
            accs, group_counts, worst = group_accuracies(pred, labels, preds.meta[field], exclude)
            for g, n in group_counts.items():
                counts[f"{field}={g}"] = n
            if name.startswith("acc:"):
                for g, a in accs.items():
                    metrics[f"acc:{field}={g}"] = a
            else:
                metrics[name] = worst
        else:
            raise ValueError(f"shift {spec.name}: unknown metric {name!r}")
    metrics.update(calibration_metrics(logits, labels))
    return metrics, counts


def id_view(preds: Predictions, class_map: ClassMap, setting: str) -> Predictions:
    """ID predictions restricted to a shift's classes: the matched ID reference.

    Keeps examples whose label belongs to a target of ``class_map``, relabels them to the
    target index and keeps the full-width logits (scored later through the same map).
    """
    to_target = class_map.source_to_target()
    labels = np.asarray(preds.labels, dtype=np.int64)
    keep = np.fromiter((int(y) in to_target for y in labels), dtype=bool, count=len(labels))
    new_labels = np.array([to_target[int(y)] for y in labels[keep]], dtype=np.int64)
    return Predictions(
        model=preds.model,
        shift=setting,
        keys=np.asarray(preds.keys)[keep],
        labels=new_labels,
        logits=np.asarray(preds.logits)[keep],
        meta={k: np.asarray(v)[keep] for k, v in preds.meta.items()},
    )
