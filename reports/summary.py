"""``summary.json``: the report's machine-readable interface (schema in ``docs/summary-schema.md``)."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import atomic_write_text
from reports.analysis import BaselineRule, Group, point_intervals
from reports.scales import DEFAULT_EPS

SCHEMA = "shiftbench.report.summary/1"
CLIPPING_RULE = f"accuracies clipped to [eps, 1-eps] before logit/probit, eps = 0.5/n (half an example), {DEFAULT_EPS:g} when n is unknown"


def _num(v: Any) -> float | None:
    """A finite float, or None (JSON null) where there is no value."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _fit_obj(g: Group, transform: str) -> dict[str, Any]:
    trend = g.fits[transform]
    base = [p.name for p, b in zip(g.points, g.baseline, strict=True) if b]
    obj: dict[str, Any] = {
        "shift": g.shift,
        "x_setting": g.x_setting,
        "y_setting": g.shift,
        "metric": g.metric,
        "protocol": dict(g.protocol),
        "transform": transform,
        "slope": _num(trend.slope),
        "intercept": _num(trend.intercept),
        "r2": _num(trend.r2),
        "n": trend.n,
        "baseline_models": base,
        "segments": [],
        "bootstrap_dropped": 0,
        "clipped": list(g.clipped),
        "excluded_from_baseline": list(g.excluded),
    }
    for s in trend.segments:
        seg = {"x_low": _num(s.lo), "x_high": _num(s.hi), "slope": s.slope, "intercept": s.intercept, "r2": s.r2, "n": s.n}
        if len(s.boot_slopes):
            seg["slope_ci"] = [float(v) for v in np.percentile(s.boot_slopes, [2.5, 97.5])]
            seg["intercept_ci"] = [float(v) for v in np.percentile(s.boot_intercepts, [2.5, 97.5])]
        obj["segments"].append(seg)
        obj["bootstrap_dropped"] += s.boot_dropped
    if len(trend.segments) == 1:
        obj["slope_ci"] = obj["segments"][0].get("slope_ci")
        obj["intercept_ci"] = obj["segments"][0].get("intercept_ci")
    return obj


def build_summary(
    groups: Sequence[Group],
    *,
    rule: BaselineRule,
    transform: str,
    samples: int,
    seed: int,
    highlighted: set[str],
    sources: dict[str, int],
    version: str,
    level: float = 0.95,
) -> dict[str, Any]:
    """The summary object: fits (per group and transform), unfitted groups, and model scores."""
    fits, unfitted, models = [], [], []
    for g in groups:
        if g.reason:
            unfitted.append({"shift": g.shift, "x_setting": g.x_setting, "metric": g.metric, "protocol": dict(g.protocol),
                             "n_baseline": int(g.baseline.sum()), "reason": g.reason})
        else:
            fits += [_fit_obj(g, t) for t in g.fits]
        xl, xh, yl, yh = point_intervals(g, level)
        for i, p in enumerate(g.points):
            if not p.preferred:
                continue
            fitted = g.er is not None
            models.append({
                "model": p.model,
                "source": p.source,
                "tags": list(p.tags),
                "shift": p.shift,
                "x_setting": p.x_setting,
                "metric": p.metric,
                "protocol": dict(p.protocol),
                "transform": transform,
                "id_acc": p.x,
                "ood_acc": p.y,
                "id_n": p.n_x,
                "ood_n": p.n_y,
                "id_ci": [_num(xl[i]), _num(xh[i])],
                "ood_ci": [_num(yl[i]), _num(yh[i])],
                "effective_robustness": _num(g.er[i]) if fitted else None,
                "er_low": _num(g.er_low[i]) if fitted else None,
                "er_high": _num(g.er_high[i]) if fitted else None,
                "er_interval_parts": {
                    "sampling_half_width": _num(g.er_sampling_half[i]),
                    "fit_low": _num(g.er_fit_low[i]),
                    "fit_high": _num(g.er_fit_high[i]),
                } if fitted else None,
                "images": list(p.incomplete),
                "baseline": bool(g.baseline[i]),
                "highlighted": p.name in highlighted,
            })
    return {
        "schema": SCHEMA,
        "shiftbench_version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "transform": transform,
        "baseline": {**rule.to_dict(), "description": rule.describe()},
        "bootstrap": {"samples": samples, "seed": seed, "level": level},
        "clipping": CLIPPING_RULE,
        "sources": sources,
        "fits": fits,
        "unfitted": unfitted,
        "models": models,
    }


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder; give a file path such as {path / 'summary.json'}")
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    atomic_write_text(path, text)
