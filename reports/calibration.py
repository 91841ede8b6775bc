"""Calibration under shift: ECE and NLL per shift, before and after temperature scaling.

``ece`` (15 equal-width bins of top-1 confidence) and ``nll`` are computed in
:mod:`harness.metrics` on every labelled row. Here a single temperature per model is fitted on
ID data (Guo et al., 2017: minimise the NLL of ``softmax(logits / T)``), normally the held-out
ImageNet images (``--calibrate-on imagenet-heldout``) so the fit never sees a reported image,
and applied unchanged to every shift: how much of the calibration an ID fix keeps under shift
(Ovadia et al., 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics import expected_calibration_error, negative_log_likelihood

#: Search range of log T: temperatures from 1/20 to 20.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` (a 1-D convex problem in 1/T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    res = minimize_scalar(lambda lt: negative_log_likelihood(logits, labels, float(np.exp(lt))),
                          bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    if not np.isclose(t, np.exp(LOG_T_BOUNDS), rtol=1e-3).any():
        return t
    raise ValueError(f"the NLL keeps falling to the edge of the temperature range [{np.exp(LOG_T_BOUNDS[0]):.3g}, "
                     f"{np.exp(LOG_T_BOUNDS[1]):.3g}] (T = {t:.3g}): the model is near chance or its logits are "
                     "constant there, and no temperature calibrates it; leave it out with --models")


@dataclass(frozen=True)
class CalibrationRow:
    model: str
    setting: str
    n: int
    accuracy: float
    ece: float
    nll: float
    temperature: float | None = None
    ece_ts: float | None = None
    nll_ts: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def calibration_rows(run, calibrate_on: str | None = None, models: list[str] | None = None) -> list[CalibrationRow]:
    """ECE and NLL of every labelled (model, setting) of a :class:`reports.stored.StoredRun`;
    with ``calibrate_on``, also after the temperature each model fits on that setting."""
    out = []
    models = models or [m for m in dict.fromkeys(r.model for r in run.rows)]
    if calibrate_on:
        check_fit_set(run, calibrate_on)
    for model in models:
        temperature = None
        if calibrate_on:
            if run.row(model, calibrate_on) is None:
                raise FileNotFoundError(
                    f"{run.path}: no {calibrate_on} predictions for {model} to fit a temperature on; "
                    f"run `shiftbench run --shifts {calibrate_on} --run-dir {run.path} ...` first"
                )
            fit = run.outcomes(model, calibrate_on)
            try:
                temperature = fit_temperature(fit.logits, fit.labels)
            except ValueError as exc:
                raise ValueError(f"{model} on {calibrate_on}: {exc}") from None
        for row in [r for r in run.rows if r.model == model]:
            o = run.outcomes(model, row.setting)
            kw: dict[str, Any] = {}
            if temperature is not None:
                kw = {"temperature": temperature,
                      "ece_ts": expected_calibration_error(o.logits, o.labels, temperature=temperature),
                      "nll_ts": negative_log_likelihood(o.logits, o.labels, temperature=temperature)}
            out.append(CalibrationRow(model, row.setting, len(o), o.accuracy,
                                      expected_calibration_error(o.logits, o.labels),
                                      negative_log_likelihood(o.logits, o.labels), **kw))
    return out


def ood_id_setting(run, setting: str) -> str | None:
    """The ID setting an OOD ``setting`` is compared with in the figure; None for an ID setting
    (a view, or a shift that is its own or has no ID reference) or one whose spec is unknown."""
    if "@" in setting:
        return None
    try:
        spec = run.spec(setting)
    except (ValueError, FileNotFoundError):
        return None
    if not spec.id_reference or spec.id_reference == setting:
        return None
    return run.id_setting(setting)


def check_fit_set(run, calibrate_on: str) -> None:
    """Refuse a temperature fitted on images the figure reports: an OOD shift, or the ID set an
    OOD shift is compared with (its same-class views share its images). Fitted there, the
    calibrated ECE of those images is in-sample, better than any model earns."""
    reported: set[str] = set()
    for r in run.rows:
        ref = ood_id_setting(run, r.setting)
        if ref is not None:
            reported |= {r.setting, ref}
    head = calibrate_on.partition("@")[0]
    shared = sorted(s for s in reported if s.partition("@")[0] == head)
    if shared:
        raise ValueError(
            f"--calibrate-on {calibrate_on}: its images are reported in the calibration figure ({', '.join(shared)}), so the "
            "calibrated ECE there would be in-sample; fit the temperature on held-out ID data "
            "(`shiftbench make-heldout`, then `--shifts imagenet-heldout`, and --calibrate-on imagenet-heldout)"
        )


def id_ood_pairs(run, rows: list[CalibrationRow]) -> list[tuple[CalibrationRow, CalibrationRow]]:
    """(ID row, OOD row) per model and OOD shift, the ID row on the shift's classes where it has them."""
    by = {(r.model, r.setting): r for r in rows}
    out = []
    for r in rows:
        ref = ood_id_setting(run, r.setting)
        x = by.get((r.model, ref)) if ref is not None else None
        if x is not None:
            out.append((x, r))
    return out


def calibration_figure(run, rows: list[CalibrationRow], title: str = ""):
    """ID ECE vs OOD ECE, one point per (model, shift); with a temperature, a second panel after it."""
    import matplotlib.pyplot as plt

    pairs = id_ood_pairs(run, rows)
    scaled = any(r.temperature is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if scaled else 1, figsize=(11.69, 6.2) if scaled else (8.27, 6.2), squeeze=False)
    shifts = sorted({o.setting for _, o in pairs})
    markers = "osD^v<>p*hX"
    panels = [("ece", "before temperature scaling" if scaled else "")]
    if scaled:
        panels.append(("ece_ts", "after temperature scaling (fitted on ID data)"))
    for ax, (field, label) in zip(axes[0], panels, strict=True):
        top = 0.0
        for k, shift in enumerate(shifts):
            pts = [(getattr(x, field), getattr(o, field)) for x, o in pairs if o.setting == shift]
            if not pts:
                continue
            xs, ys = (100 * np.array(v) for v in zip(*pts, strict=True))
            top = max(top, xs.max(), ys.max())
            ax.scatter(xs, ys, marker=markers[k % len(markers)], label=shift, alpha=0.8)
        top = max(top * 1.1, 1.0)
        ax.plot([0, top], [0, top], color="#999999", lw=1, ls="--", label="y = x")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("ID ECE (%) on the shift's classes")
        ax.set_ylabel("OOD ECE (%)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "Calibration under shift: expected calibration error (15 bins)", fontsize=12)
    fig.tight_layout()
    return fig


def format_table(rows: list[CalibrationRow]) -> str:
    scaled = any(r.temperature is not None for r in rows)
    header = ["model", "setting", "n", "top1", "ECE", "NLL"] + (["T", "ECE(T)", "NLL(T)"] if scaled else [])
    lines = [header]
    for r in rows:
        line = [r.model, r.setting, str(r.n), f"{100 * r.accuracy:.2f}", f"{100 * r.ece:.2f}", f"{r.nll:.3f}"]
        if scaled:
            line += [f"{r.temperature:.3f}", f"{100 * r.ece_ts:.2f}", f"{r.nll_ts:.3f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from harness.files import atomic_file
    from reports.plain_text import plain_figure

    path = Path(path)
    with atomic_file(path, "wb", fsync=False) as fh:  # a unique temp name, renamed when complete
        plain_figure(fig).savefig(fh, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
