"""A user ``folder`` shift run with ``shiftbench run --id-shift`` gets its trend page from
``shiftbench report RUN_DIR ID_RUN_DIR`` with no report flag, the fit equal to a hand computation
from the runs' own rows; ``report --id-shift`` still overrides the ID setting a row names."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit
from test_report_reach import oracle

from harness import registry
from harness.api import Result
from harness.cli import main

pytestmark = pytest.mark.slow

BASELINE_SKILLS = (0.2, 0.35, 0.5, 0.65, 0.8)
MINE_SKILLS = (0.45, 0.9)
ID = "folder:pets-id"
OOD = "folder:pets-ood"


def run_folder(run_dir: Path, data: Path, skills, prefix: str, *extra: str) -> None:
    models = []
    for s in skills:
        models += ["--model", f"oracle:{prefix}{int(100 * s)}", "--model-arg", f"skill={s}", "--model-arg", "num_classes=4",
                   "--model-arg", f"label_space=folder:{data.name}"]
    assert main(["run", *models, "--shifts", "folder", "--data-root", str(data), "--run-dir", str(run_dir), "--workers", "0",
                 "--no-cache", "--no-progress", *extra]) == 0  # fmt: skip


def report(out: Path, *args: str) -> tuple[dict, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--no-testbed", "--no-analyses", "--bootstrap", "100", "--out", str(out / "report.pdf"),
                     "--json", str(out / "summary.json"), *args]) == 0  # fmt: skip
    return json.loads((out / "summary.json").read_text()), buf.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from shifts.fixtures import write_folder

    root = tmp_path_factory.mktemp("user-shift")
    write_folder(root / "pets-id", per_class=10)
    write_folder(root / "pets-ood", per_class=9)
    with registry.models.scoped({"oracle": oracle}):
        for name, skills, prefix in (("base", BASELINE_SKILLS, "b"), ("mine", MINE_SKILLS, "m")):
            run_folder(root / f"{name}-id", root / "pets-id", skills, prefix)
            run_folder(root / f"{name}-ood", root / "pets-ood", skills, prefix, "--id-shift", ID)
    return root


def results(run_dir: Path) -> dict[str, Result]:
    rows = [Result.from_dict(json.loads(x)) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    return {r.model: r for r in rows}


def test_the_user_shift_gets_its_page_and_fit_with_no_report_flag(runs):
    out = runs / "out"
    s, last = report(out, "--baseline-results", str(runs / "base-ood"), "--baseline-results", str(runs / "base-id"),
                     str(runs / "mine-ood"), str(runs / "mine-id"))  # fmt: skip
    assert all(r.id_setting == ID for r in results(runs / "mine-ood").values())
    assert all(r.id_setting is None for r in results(runs / "mine-id").values())

    def xy(name: str):
        ood, idr = results(runs / f"{name}-ood"), results(runs / f"{name}-id")
        models = sorted(ood)
        x = np.array([idr[m].metrics["top1"] for m in models])
        y = np.array([ood[m].metrics["top1"] for m in models])
        nx = np.array([idr[m].n for m in models])
        ny = np.array([ood[m].n for m in models])
        return models, np.clip(x, 0.5 / nx, 1 - 0.5 / nx), np.clip(y, 0.5 / ny, 1 - 0.5 / ny), y

    _, bx, by, _ = xy("base")
    zx, zy = logit(bx), logit(by)
    slope = ((zx - zx.mean()) * (zy - zy.mean())).sum() / ((zx - zx.mean()) ** 2).sum()
    intercept = zy.mean() - slope * zx.mean()
    (fit,) = [f for f in s["fits"] if f["shift"] == OOD and f["transform"] == "logit"]
    assert fit["x_setting"] == ID and fit["n"] == len(BASELINE_SKILLS)
    assert (fit["slope"], fit["intercept"]) == pytest.approx((slope, intercept), rel=1e-9, abs=1e-9)
    models, mx, _, my = xy("mine")
    for m, x, y in zip(models, mx, my, strict=True):
        (row,) = [r for r in s["models"] if r["model"] == m and r["shift"] == OOD]
        assert row["x_setting"] == ID and row["highlighted"]
        assert row["effective_robustness"] == pytest.approx(y - expit(slope * logit(x) + intercept), abs=1e-9)
    assert [d for d in s["dropped"] if d["setting"] in (ID, OOD)] == []
    assert "1 trends fitted" in last.splitlines()[-1]

    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(out / "report.pdf").pages)
    assert f"{OOD} vs {ID}" in text


def test_report_id_shift_overrides_the_id_setting_a_row_names(runs):
    s, _ = report(runs / "override", str(runs / "mine-ood"), str(runs / "mine-id"), "--id-shift", f"{OOD}=imagenet")
    assert s["id_shifts"] == {OOD: "imagenet"}
    assert not [m for m in s["models"] if m["shift"] == OOD]
    unpaired = sorted((d["model"], d["reason"], d["detail"]) for d in s["dropped"] if d["setting"] == OOD)
    assert unpaired == [(f"oracle:m{int(100 * k)}", "no-id-pair", f"no top1 result of oracle:m{int(100 * k)} on imagenet")
                        for k in MINE_SKILLS]  # fmt: skip


def test_a_run_directory_reused_with_another_data_root_keeps_each_rows_dataset(tmp_path):
    """One run directory, ``folder`` run on pets then (another model) on cars: every folder row was
    named after the run's last data root, so the pets accuracy was reported as ``folder:cars``."""
    from reports import importers
    from shifts.fixtures import write_folder

    write_folder(tmp_path / "pets", per_class=5)
    write_folder(tmp_path / "cars", per_class=5)
    with registry.models.scoped({"oracle": oracle}):
        run_folder(tmp_path / "run", tmp_path / "pets", (0.3,), "p", "--id-shift", "imagenet")
        run_folder(tmp_path / "run", tmp_path / "cars", (0.9,), "c", "--id-shift", "imagenet")
    got = {r.model: r.setting for r in importers.load(tmp_path / "run")}
    assert got == {"oracle:p30": "folder:pets", "oracle:c90": "folder:cars"}
