"""Run-level analyses over a run directory's stored predictions: agreement-on-the-line
estimates, paired comparisons (two models, or a WiSE-FT sweep against its endpoints).

Shared by ``shiftbench estimate``/``compare`` and the report's pages; nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def agreement_estimate(run: Any, shift: str, id_shift: str | None = None, models: list[str] | None = None) -> Any:
    """ALine estimates for ``shift`` from a :class:`reports.stored.StoredRun`."""
    import numpy as np

    from reports.agreement import estimate_from_predictions, shared_backbone_warnings
    from reports.stored import align

    id_setting = run.id_setting(shift, id_shift)
    candidates = models or run.models()
    missing = [m for m in (models or []) if not (run.has(m, shift) and run.has(m, id_setting))]
    if missing:
        raise ValueError(f"{run.path}: no predictions on both {id_setting} and {shift} for {', '.join(missing)}")
    chosen = [m for m in candidates if run.has(m, shift) and run.has(m, id_setting)]
    if len(chosen) < 3:
        raise ValueError(f"{run.path}: {len(chosen)} models have predictions on both {id_setting} and {shift}; "
                         "agreement-on-the-line needs 3 or more")
    ids = [run.outcomes(m, id_setting) for m in chosen]
    oods = [run.outcomes(m, shift) for m in chosen]
    _, id_index = align(ids)
    _, ood_index = align(oods)
    if not len(id_index[0]) or not len(ood_index[0]):
        raise ValueError(f"{run.path}: the models share no images on {id_setting} or {shift}")
    id_pred = np.stack([o.pred[i] for o, i in zip(ids, id_index, strict=True)])
    ood_pred = np.stack([o.pred[i] for o, i in zip(oods, ood_index, strict=True)])
    id_labels = ids[0].labels[id_index[0]]
    ood_labels = None if oods[0].labels is None else oods[0].labels[ood_index[0]]
    est = estimate_from_predictions(chosen, id_pred, id_labels, ood_pred, ood_labels)
    infos = {m: run.model_info(m) for m in chosen}
    est.warnings += shared_backbone_warnings(infos)
    est.id_setting = id_setting
    return est


class TestbedTrends:
    """The bundled testbed's trend for the group a run's model falls in (fitted once, on demand)."""

    def __init__(self, run_dir: Path, transform: str, samples: int, seed: int) -> None:
        self.run_dir, self.transform, self.samples, self.seed = Path(run_dir), transform, samples, seed
        self._groups: list[Any] | None = None

    def trend(self, model: str, shift: str) -> tuple[Any, str]:
        """(trend or None, what it is or why there is none) for ``model`` on engine shift ``shift``."""
        from reports.analysis import analyse
        from reports.importers import read_run_dir
        from reports.testbed import load_testbed

        if self._groups is None:
            rows = load_testbed() + read_run_dir(self.run_dir)
            self._groups = analyse(rows, transforms=(self.transform,), primary=self.transform, samples=self.samples, seed=self.seed)
        source = f"run:{self.run_dir.name}"
        for g in self._groups:
            if g.shift != shift:
                continue
            if any(p.source == source and p.model == model and p.preferred for p in g.points):
                fit = g.fits.get(self.transform)
                return (fit, g.label()) if fit is not None else (None, f"no trend for {g.label()}: {g.reason}")
        return None, f"{shift} is not a shift the testbed has trends for"


def compare_pair(run: Any, a: str, b: str, settings: list[str], trends: TestbedTrends | None,
                 samples: int, seed: int, level: float) -> list[dict[str, Any]]:
    """One row per setting: accuracy difference with its paired interval and test, and ER difference."""
    from reports.paired import accuracy_difference, er_difference
    from reports.stored import align

    out = []
    for setting in settings:
        oa, ob = run.outcomes(a, setting), run.outcomes(b, setting)
        if oa.labels is None:
            continue
        _, (ia, ib) = align([oa, ob])
        diff = accuracy_difference(oa.correct[ia], ob.correct[ib], samples, seed, level)
        row: dict[str, Any] = {"setting": setting, "a": a, "b": b, **diff.to_dict(), "er": None, "er_note": ""}
        if trends is not None and not run.is_id(setting):
            trend, note = trends.trend(a, setting)
            row["er_note"] = note
            id_setting = run.id_setting(setting)
            if trend is not None and run.has(a, id_setting) and run.has(b, id_setting):
                xa, xb = run.outcomes(a, id_setting), run.outcomes(b, id_setting)
                _, (ja, jb) = align([xa, xb])
                row["er"] = er_difference(trend, xa.correct[ja], xb.correct[jb], oa.correct[ia], ob.correct[ib],
                                          samples, seed, level).to_dict()
        out.append(row)
    return out


def wiseft_sweeps(run: Any) -> list[dict[str, Any]]:
    """The run's WiSE-FT sweeps: endpoints and alphas, from each model's provenance."""
    sweeps: dict[tuple[str, str], dict[float, str]] = {}
    for m in run.models():
        info = run.model_info(m)
        if info.get("method") == "wiseft" and info.get("alpha") is not None:
            sweeps.setdefault((str(info.get("zeroshot")), str(info.get("finetuned"))), {})[float(info["alpha"])] = m
    out = []
    for (zs, ft), members in sweeps.items():
        if 0.0 in members and 1.0 in members and len(members) > 2:
            out.append({"zeroshot": zs, "finetuned": ft, "members": dict(sorted(members.items()))})
    return out


def compare_sweep(run: Any, sweep: dict[str, Any], settings: list[str] | None, samples: int, seed: int,
                  level: float, alpha: float) -> list[dict[str, Any]]:
    """Every intermediate alpha against alpha 0 (zero-shot) and alpha 1 (fine-tuned), per setting;
    p-values Holm-adjusted within each (setting, endpoint) family."""
    from reports.paired import holm

    members = sweep["members"]
    zs, ft = members[0.0], members[1.0]
    mids = [(al, m) for al, m in members.items() if al not in (0.0, 1.0)]
    shared = settings or [s for s in settings_of(run, [zs, ft, *(m for _, m in mids)])]
    rows = []
    for setting in shared:
        for endpoint_name, endpoint in (("zero-shot", zs), ("fine-tuned", ft)):
            family = []
            for al, m in mids:
                (r,) = compare_pair(run, m, endpoint, [setting], None, samples, seed, level) or [None]
                if r is not None:
                    family.append({**r, "alpha": al, "endpoint": endpoint_name})
            for r, p in zip(family, holm([r["p_value"] for r in family]), strict=True):
                r["p_holm"] = float(p)
                r["significant"] = bool(p < alpha)
            rows += family
    return rows


def settings_of(run: Any, models: list[str]) -> list[str]:
    """Settings every model has a labelled row for, ID first, in the run's order."""
    have = [{r.setting for r in run.rows if r.model == m} for m in models]
    common = set.intersection(*have) if have else set()
    ordered = list(dict.fromkeys(r.setting for r in run.rows if r.setting in common))
    return sorted(ordered, key=lambda s: not run.is_id(s))


def format_estimate(est: Any, shift: str) -> str:
    holds, verdict = est.verdict()
    a = est.agreement_line
    lines = [
        f"agreement-on-the-line for {shift} (ID: {est.id_setting}); {len(est.models)} models, "
        f"{est.n_id} ID and {est.n_ood} OOD images shared",
        f"  agreement fit (probit, {a.n} pairs): slope {a.slope:.3f}, intercept {a.intercept:.3f}, R^2 {a.r2:.3f}",
    ]
    if est.accuracy_line is not None:
        b = est.accuracy_line
        lines.append(f"  accuracy fit  (probit, {b.n} models): slope {b.slope:.3f}, intercept {b.intercept:.3f}, R^2 {b.r2:.3f}"
                     "  (OOD labels used for this check only)")
    lines.append(f"  {'holds' if holds else 'DOES NOT HOLD'}: {verdict}")
    header = ["model", "ID top1", "ALine-S", "ALine-D"] + (["true OOD", "err S", "err D"] if est.ood_accuracy is not None else [])
    table = [header]
    for k, m in enumerate(est.models):
        row = [m, f"{100 * est.id_accuracy[k]:.2f}", f"{100 * est.aline_s[k]:.2f}", f"{100 * est.aline_d[k]:.2f}"]
        if est.ood_accuracy is not None:
            t = est.ood_accuracy[k]
            row += [f"{100 * t:.2f}", f"{100 * (est.aline_s[k] - t):+.2f}", f"{100 * (est.aline_d[k] - t):+.2f}"]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    mae = est.mae()
    if mae is not None:
        lines.append(f"hidden-label check on {shift}: mean absolute error ALine-S {100 * mae['aline_s']:.2f} points, "
                     f"ALine-D {100 * mae['aline_d']:.2f} points over {len(est.models)} models")
    else:
        lines.append(f"{shift} has no labels: the estimates cannot be checked here (validate the method on a labelled shift)")
    return "\n".join(lines)


def format_pair(rows: list[dict[str, Any]], level: float) -> str:
    pct = f"{100 * level:g}%"
    header = ["setting", "n", "A top1", "B top1", f"A-B [{pct}]", "McNemar p", f"ER A-B [{pct}]"]
    table = [header]
    notes = []
    for r in rows:
        er = r["er"]
        table.append([
            r["setting"], str(r["n"]), f"{100 * r['acc_a']:.2f}", f"{100 * r['acc_b']:.2f}",
            f"{100 * r['diff']:+.2f} [{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]",
            f"{r['p_value']:.3g}",
            "" if er is None else f"{100 * er['diff']:+.2f} [{100 * er['low']:+.2f}, {100 * er['high']:+.2f}]",
        ])
        if r["er_note"]:
            notes.append(f"  {r['setting']}: ER against {r['er_note']}")
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip() for t in table)
    return text + ("\n" + "\n".join(notes) if notes else "")


def format_sweep(rows: list[dict[str, Any]], sweep: dict[str, Any], level: float, alpha: float) -> str:
    pct = f"{100 * level:g}%"
    lines = [f"WiSE-FT sweep {sweep['zeroshot']} -> {sweep['finetuned']}: each alpha minus an endpoint, "
             f"paired {pct} interval, McNemar p Holm-adjusted per setting and endpoint; * = significant at {alpha:g}"]
    header = ["setting", "alpha", "vs", "n", "diff", f"[{pct}]", "p (Holm)", ""]
    table = [header]
    for r in rows:
        table.append([r["setting"], f"{r['alpha']:g}", r["endpoint"], str(r["n"]), f"{100 * r['diff']:+.2f}",
                      f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]", f"{r['p_holm']:.3g}", "*" if r["significant"] else ""])
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip() for t in table]
    return "\n".join(lines)
