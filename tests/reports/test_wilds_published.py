"""The bundled WILDS results: transcribed from the WILDS paper's appendix tables, checked against
its Table 2 (the same OOD numbers, transcribed separately), and fitted by default."""

import numpy as np
import pytest
from scipy.special import logit

from reports.report import ReportConfig, run_report
from reports.testbed import load_wilds_published

#: WILDS paper Table 2: OOD test performance of ERM, CORAL, IRM and Group DRO (percent).
TABLE_2 = {
    ("iwildcam", "macro_f1"): (31.0, 32.8, 15.1, 23.9),
    ("camelyon17", "top1"): (70.3, 59.5, 64.2, 68.4),
    ("fmow", "worst_acc:region!Other"): (32.3, 31.7, 30.0, 30.8),
}
ALGORITHMS = ("ERM", "CORAL", "IRM", "Group DRO")


def test_every_ood_value_matches_table_2():
    rows = {(r.model, r.setting): r for r in load_wilds_published()}
    for (shift, metric), values in TABLE_2.items():
        for alg, v in zip(ALGORITHMS, values, strict=True):
            r = rows[f"{shift}/{alg}", shift]
            assert r.metrics[metric] == pytest.approx(v / 100) and r.main_metric == metric, (shift, alg)
    # every OOD row names its ID split and that row exists, with the same metrics
    for (model, _setting), r in rows.items():
        if r.id_setting:
            assert set(rows[model, r.id_setting].metrics) == set(r.metrics)
    assert {r.setting for r in rows.values()} == {"iwildcam", "iwildcam:id_test", "fmow", "fmow:id_test", "camelyon17",
                                                  "camelyon17:id_val"}


def test_wilds_trends_are_fitted_from_the_bundled_table_by_default():
    s = run_report(ReportConfig(samples=0, out=None, json=None))
    fits = {(f["shift"], f["metric"]): f for f in s["fits"] if f["transform"] == "logit" and f["shift"] in ("iwildcam", "fmow", "camelyon17")}
    assert set(fits) == {("iwildcam", "top1"), ("iwildcam", "macro_f1"), ("fmow", "top1"), ("fmow", "worst_acc:region!Other"),
                         ("camelyon17", "top1")}
    assert fits["iwildcam", "macro_f1"]["n"] == 5 and fits["camelyon17", "top1"]["n"] == 4
    # Camelyon17 by hand: least squares of logit(OOD) on logit(ID) over Table 5
    x = logit(np.array([93.2, 95.4, 91.6, 93.7]) / 100)
    y = logit(np.array([70.3, 59.5, 64.2, 68.4]) / 100)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    c = fits["camelyon17", "top1"]
    assert c["slope"] == pytest.approx(slope) and c["intercept"] == pytest.approx(y.mean() - slope * x.mean())
    assert c["x_setting"] == "camelyon17:id_val"
