"""Agreement-on-the-line: OOD accuracy without OOD labels (Baek et al., NeurIPS 2022).

For a set of models, the agreement of two models on a dataset is the fraction of its images
on which their top-1 predictions are equal; it needs no labels. Baek et al. observe that when
ID-vs-OOD *accuracy* lies on a line in probit axes, ID-vs-OOD *agreement* over model pairs lies
on a line with the same slope and intercept. Fitting the agreement line on unlabelled OOD
images then estimates each model's OOD accuracy:

- ALine-S: ``acc_ood(h) = Phi(a * Phi^-1(acc_id(h)) + b)``, with ``(a, b)`` the agreement line
  (ordinary least squares of probit OOD agreement on probit ID agreement over all pairs).
- ALine-D: for every pair (h, h'), ``(Phi^-1(acc_ood(h)) + Phi^-1(acc_ood(h'))) / 2 =
  Phi^-1(agr_ood(h, h')) + a * [(Phi^-1(acc_id(h)) + Phi^-1(acc_id(h'))) / 2 - Phi^-1(agr_id(h, h'))]``,
  a linear system in the unknown probit OOD accuracies solved by least squares. The intercept
  cancels, so only the slope is borrowed from the agreement line.

Fractions are clipped half an example from 0 and 1 before the probit (as the trend fits do).
Whether the phenomenon holds is judged with shiftbench's rule (:data:`AGREEMENT_R2`,
:data:`LINE_GAP`), stated with every result; it is not part of the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reports import scales
from reports.trend import ols

#: The agreement line "holds" when its R^2 over model pairs is at least this (shiftbench's rule).
AGREEMENT_R2 = 0.95
#: With OOD labels, the agreement and accuracy lines "match" when their predictions at the
#: models' ID accuracies differ by at most this (accuracy, shiftbench's rule).
LINE_GAP = 0.02
#: ALine-D needs a pair graph with an odd cycle to identify every model: three models at least.
MIN_MODELS = 3
#: ID agreements spanning less than this give a line fitted over a sliver (warned).
MIN_AGREEMENT_SPAN = 0.05


def probit(p: np.ndarray, n: np.ndarray | float | None) -> np.ndarray:
    """``Phi^-1`` of fractions clipped half an example (``0.5/n``) away from 0 and 1."""
    return scales.forward("probit", scales.clip(p, n)[0])


def pairwise_agreement(preds: np.ndarray) -> np.ndarray:
    """[M, N] top-1 predictions on shared images -> [M, M] fraction of images where two agree."""
    preds = np.asarray(preds)
    m = len(preds)
    out = np.ones((m, m))
    for i in range(m):
        out[i, i + 1 :] = (preds[i + 1 :] == preds[i][None, :]).mean(axis=1)
        out[i + 1 :, i] = out[i, i + 1 :]
    return out


@dataclass(frozen=True)
class Line:
    """``Phi^-1(y) = slope * Phi^-1(x) + intercept`` fitted over ``n`` points."""

    slope: float
    intercept: float
    r2: float
    n: int

    def predict(self, x: np.ndarray, n_x: float | None = None) -> np.ndarray:
        return scales.inverse("probit", self.slope * probit(x, n_x) + self.intercept)

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept, "r2": self.r2, "n": self.n}


def fit_line(x: np.ndarray, y: np.ndarray, n_x: float | None, n_y: float | None) -> Line:
    slope, intercept, r2 = ols(probit(x, n_x), probit(y, n_y))
    return Line(slope, intercept, r2, len(np.atleast_1d(x)))


@dataclass
class AgreementEstimate:
    """ALine-S and ALine-D estimates for one shift, with the fits they came from."""

    models: list[str]
    id_accuracy: np.ndarray
    id_agreement: np.ndarray  # [M, M]
    ood_agreement: np.ndarray  # [M, M]
    n_id: int
    n_ood: int
    agreement_line: Line
    aline_s: np.ndarray
    aline_d: np.ndarray
    ood_accuracy: np.ndarray | None = None  # true OOD accuracy, where the data has labels
    accuracy_line: Line | None = None
    warnings: list[str] = field(default_factory=list)
    id_setting: str = ""

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return np.triu_indices(len(self.models), k=1)

    def mae(self) -> dict[str, float] | None:
        """Mean absolute error of each estimator against the true OOD accuracies (fractions)."""
        if self.ood_accuracy is None:
            return None
        return {
            "aline_s": float(np.abs(self.aline_s - self.ood_accuracy).mean()),
            "aline_d": float(np.abs(self.aline_d - self.ood_accuracy).mean()),
        }

    def line_gap(self) -> float | None:
        """Largest difference of the agreement and accuracy lines at the models' ID accuracies."""
        if self.accuracy_line is None:
            return None
        a = self.agreement_line.predict(self.id_accuracy, self.n_id)
        b = self.accuracy_line.predict(self.id_accuracy, self.n_id)
        return float(np.abs(a - b).max())

    def verdict(self) -> tuple[bool, str]:
        """Whether agreement-on-the-line holds here, and why, in one sentence."""
        line = self.agreement_line
        if line.r2 < AGREEMENT_R2:
            return False, (f"agreement is not on a line (R^2 {line.r2:.3f} < {AGREEMENT_R2}): the estimates "
                           "below are unreliable for this shift")
        gap = self.line_gap()
        if gap is not None and self.accuracy_line is not None:
            if self.accuracy_line.r2 < AGREEMENT_R2:
                return False, (f"agreement is on a line (R^2 {line.r2:.3f}) but accuracy is not (R^2 "
                               f"{self.accuracy_line.r2:.3f}): ALine-S is unreliable here; ALine-D may still do")
            if gap > LINE_GAP:
                return False, (f"agreement and accuracy lie on different lines (up to {100 * gap:.1f} points apart "
                               f"at the models' ID accuracies, more than {100 * LINE_GAP:g}): the estimates are biased here")
            return True, (f"agreement-on-the-line holds: agreement R^2 {line.r2:.3f}, accuracy R^2 "
                          f"{self.accuracy_line.r2:.3f}, lines within {100 * gap:.1f} points")
        if self.ood_accuracy is not None:
            return True, (f"agreement is on a line (R^2 {line.r2:.3f}); the models' ID accuracies are all equal, "
                          "so no accuracy line can be fitted to check it against")
        return True, (f"agreement is on a line (R^2 {line.r2:.3f}); without OOD labels whether accuracy "
                      "follows the same line cannot be checked")

    def to_dict(self) -> dict[str, Any]:
        holds, why = self.verdict()
        out: dict[str, Any] = {
            "models": list(self.models),
            "n_id": self.n_id,
            "n_ood": self.n_ood,
            "agreement_line": self.agreement_line.to_dict(),
            "accuracy_line": self.accuracy_line.to_dict() if self.accuracy_line else None,
            "holds": holds,
            "verdict": why,
            "warnings": list(self.warnings),
            "mae": self.mae(),
            "estimates": [],
        }
        for k, m in enumerate(self.models):
            out["estimates"].append({
                "model": m,
                "id_accuracy": float(self.id_accuracy[k]),
                "aline_s": float(self.aline_s[k]),
                "aline_d": float(self.aline_d[k]),
                "ood_accuracy": None if self.ood_accuracy is None else float(self.ood_accuracy[k]),
            })
        return out


def aline(
    models: Sequence[str],
    id_accuracy: np.ndarray,
    id_agreement: np.ndarray,
    ood_agreement: np.ndarray,
    n_id: int,
    n_ood: int,
    ood_accuracy: np.ndarray | None = None,
) -> AgreementEstimate:
    """ALine-S and ALine-D from ID accuracies and ID/OOD pairwise agreements (Baek et al. 2022)."""
    m = len(models)
    if m < MIN_MODELS:
        raise ValueError(f"agreement-on-the-line needs at least {MIN_MODELS} models with predictions on both sets, got {m}")
    id_accuracy = np.asarray(id_accuracy, dtype=float)
    i, j = np.triu_indices(m, k=1)
    agr_id, agr_ood = np.asarray(id_agreement)[i, j], np.asarray(ood_agreement)[i, j]
    zx, zy = probit(agr_id, n_id), probit(agr_ood, n_ood)
    if np.ptp(zx) == 0:
        raise ValueError(f"every pair of the {m} models agrees equally often on ID data ({100 * agr_id[0]:.2f}%): "
                         "no agreement line can be fitted; add more diverse models")
    slope, intercept, r2 = ols(zx, zy)
    line = Line(slope, intercept, r2, len(zx))
    z_acc = probit(id_accuracy, n_id)
    aline_s = scales.inverse("probit", slope * z_acc + intercept)
    # ALine-D: A w = c, one row per pair, w the probit OOD accuracies.
    a = np.zeros((len(i), m))
    rows = np.arange(len(i))
    a[rows, i] = 0.5
    a[rows, j] = 0.5
    c = zy + slope * ((z_acc[i] + z_acc[j]) / 2 - zx)
    w, *_ = np.linalg.lstsq(a, c, rcond=None)
    aline_d = scales.inverse("probit", w)
    est = AgreementEstimate(list(models), id_accuracy, np.asarray(id_agreement), np.asarray(ood_agreement),
                            int(n_id), int(n_ood), line, aline_s, aline_d)
    if ood_accuracy is not None:
        est.ood_accuracy = np.asarray(ood_accuracy, dtype=float)
        if np.ptp(z_acc) > 0:
            est.accuracy_line = fit_line(id_accuracy, est.ood_accuracy, n_id, n_ood)
        else:
            est.warnings.append("every model has the same ID accuracy: no accuracy line to check the agreement line against")
    span = float(agr_id.max() - agr_id.min())
    if span < MIN_AGREEMENT_SPAN:
        est.warnings.append(
            f"ID agreements span only {100 * span:.1f} points ({100 * agr_id.min():.1f}-{100 * agr_id.max():.1f}%): "
            "the agreement line is fitted over a sliver and extrapolates; add more diverse models"
        )
    return est


def estimate_from_predictions(
    models: Sequence[str],
    id_pred: np.ndarray,
    id_labels: np.ndarray,
    ood_pred: np.ndarray,
    ood_labels: np.ndarray | None = None,
) -> AgreementEstimate:
    """ALine estimates from [M, N] top-1 predictions on shared ID and OOD images.

    ``ood_labels`` are never used by the estimators; given, they give the true accuracies the
    estimates are checked against (the hidden-label validation)."""
    id_pred, ood_pred = np.asarray(id_pred), np.asarray(ood_pred)
    id_acc = (id_pred == np.asarray(id_labels)[None, :]).mean(axis=1)
    ood_acc = None if ood_labels is None else (ood_pred == np.asarray(ood_labels)[None, :]).mean(axis=1)
    return aline(models, id_acc, pairwise_agreement(id_pred), pairwise_agreement(ood_pred),
                 id_pred.shape[1], ood_pred.shape[1], ood_acc)


def backbone_key(info: Mapping[str, Any]) -> str | None:
    """What a model shares with others of one backbone, from its provenance (``describe()``):
    a WiSE-FT sweep's endpoints, or the architecture of soup ingredients and soups. None for
    a model trained on its own."""
    tags = set(info.get("tags") or ())
    if info.get("method") == "wiseft" or "wise-ft" in tags:
        return f"WiSE-FT interpolations of {info.get('zeroshot', '?')} and {info.get('finetuned', '?')}"
    if "soup" in tags or "ingredient" in info or "candidate" in info:
        return f"soup ingredients and soups of {info.get('arch', '?')}"
    return None


def shared_backbone_warnings(infos: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One warning per group of two or more models that share a backbone."""
    groups: dict[str, list[str]] = {}
    for model, info in infos.items():
        key = backbone_key(info or {})
        if key:
            groups.setdefault(key, []).append(model)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        share = "all models" if len(members) == len(infos) else f"{len(members)} of {len(infos)} models"
        out.append(
            f"{share} are {key} ({', '.join(members)}): models sharing one backbone may lack the diversity "
            "agreement-on-the-line needs (Saxena et al., 2024); add independently trained models"
        )
    return out
