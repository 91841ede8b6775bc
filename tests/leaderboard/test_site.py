"""The site builds from a folder of mixed valid and invalid submissions; ranks, intervals and
the trend are checked against values computed here by hand."""

import json
import math
import os
import shutil

import leaderboard_toy as toy
import numpy as np
import pytest
from pypdf import PdfReader
from test_submission import raw_tar, rewrite

from harness.api import Result
from reports.leaderboard import build_leaderboard
from reports.leaderboard.ranking import Z95, competition_ranks
from reports.leaderboard.trend import fit_logit_trend, logit, sigmoid
from reports.submission import load_card, write_bundle

BASELINE_MODELS = {
    f"base-{i}": (skill, 100 + i) for i, skill in enumerate((0.1, 0.3, 0.5, 0.7, 0.9))
}


def make_folder(root):
    """Three valid entries (one under another protocol), four invalid files."""
    subs = root / "subs"
    subs.mkdir(parents=True)
    for name, skill, seed, protocols in [
        ("alpha", 0.9, 1, None),
        ("beta", 0.5, 2, None),
        ("gamma", 0.7, 3, {"toy-o": {**toy.O_PROTOCOL, "crop": "none"}}),
    ]:
        run = toy.write_run(root / f"run-{name}", {f"{name}-net": (skill, seed)}, protocols)
        card = toy.write_card(root / f"{name}.toml", name=f"{name} <b>net</b>")
        write_bundle(run, load_card(card), subs / f"{name}.tar.gz")

    def bump(manifest, members):
        rows = [json.loads(x) for x in members["results.jsonl"].decode().splitlines()]
        rows[1]["metrics"]["top1"] = 1.0
        members["results.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()

    rewrite(subs / "beta.tar.gz", subs / "cheat.tar.gz", bump)
    raw_tar(subs / "traversal.tar.gz", [("../../../escaped.txt", b"owned")])
    (subs / "notes.txt").write_text("hello")
    (subs / "broken.tar.gz").write_bytes(b"\x1f\x8b garbage")
    baseline = toy.write_run(root / "baseline", BASELINE_MODELS) / "results.jsonl"
    return subs, baseline


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    subs, baseline = make_folder(root)
    before = {p for p in root.rglob("*")}
    out = root / "site"
    board = build_leaderboard(
        subs, out, required=toy.SUITE, baselines=[baseline], spec_lookup=toy.lookup, progress=False
    )
    written = {p for p in root.rglob("*")} - before
    return root, out, board, written


def test_only_the_site_folder_is_written(site):
    root, out, _, written = site
    assert written and all(p == out or out in p.parents for p in written)
    assert not (root.parent / "escaped.txt").exists()
    assert not list(out.rglob("*.tmp"))


def test_accepted_rejected_and_protocol_tables(site):
    _, _, board, _ = site
    assert sorted(e.model for e in board.accepted) == ["alpha-net", "beta-net", "gamma-net"]
    assert [sorted(e.model for e in t.entries) for t in board.tables] == [
        ["alpha-net", "beta-net"],
        ["gamma-net"],
    ]
    rejected = dict(board.rejected)
    assert sorted(rejected) == ["broken.tar.gz", "cheat.tar.gz", "notes.txt", "traversal.tar.gz"]
    assert (
        "[hash-mismatch] results.jsonl: sha256 differs from manifest.json (file edited or swapped)"
        in rejected["cheat.tar.gz"]
    )
    assert any(
        r.startswith("[metric-mismatch] toy-v2: claimed top1 1.0 but the predictions give")
        for r in rejected["cheat.tar.gz"]
    )
    assert rejected["traversal.tar.gz"][0].endswith(
        "member '../../../escaped.txt' contains '..' (path traversal); refused"
    )
    assert rejected["notes.txt"] == ["[not-a-bundle] not a .tar.gz submission bundle"]
    assert rejected["broken.tar.gz"][0].startswith("[corrupt]")


def test_trend_and_effective_robustness_by_hand(site):
    root, _, board, _ = site
    rows = [
        Result.from_dict(json.loads(x))
        for x in (root / "baseline/results.jsonl").read_text().splitlines()
    ]
    top1 = {(r.model, r.setting): r.metrics["top1"] for r in rows}
    x = [top1[(m, "toy")] for m in BASELINE_MODELS]
    y = [top1[(m, "toy-v2")] for m in BASELINE_MODELS]
    # closed-form least squares in logit space
    lx, ly = logit(x), logit(y)
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    intercept = ly.mean() - slope * lx.mean()
    table = board.tables[0]
    trend = table.trends["toy-v2"]
    assert trend.slope == pytest.approx(slope) and trend.intercept == pytest.approx(intercept)
    e = next(e for e in table.entries if e.model == "alpha-net")
    p = e.points["toy-v2"]
    expected_er = p.y - 1 / (1 + math.exp(-(slope * math.log(p.x / (1 - p.x)) + intercept)))
    assert p.er == pytest.approx(expected_er)
    # the interval: OOD binomial term plus the ID term through the trend's slope
    g = sigmoid(slope * logit(p.x) + intercept)
    d = slope * g * (1 - g) / (p.x * (1 - p.x))
    assert p.er_half == pytest.approx(
        Z95 * math.sqrt(p.y * (1 - p.y) / 20 + d**2 * p.x * (1 - p.x) / 40)
    )
    assert (p.n_x, p.n_y) == (40, 20)
    assert e.points["toy-r"].n_x == 16 and e.points["toy-o"].n_x == 20
    ys = [e.points[s].y for s in table.ood_shifts]
    assert e.avg_ood == pytest.approx(sum(ys) / 3)
    assert e.avg_ood_half == pytest.approx(
        Z95 * math.sqrt(sum(q * (1 - q) / n for q, n in zip(ys, (20, 12, 9), strict=True))) / 3
    )
    assert e.avg_er == pytest.approx(sum(e.points[s].er for s in table.ood_shifts) / 3)


def test_ranks():
    assert competition_ranks([0.5, 0.7, 0.5, 0.1]) == [2, 1, 2, 4]


def test_trend_needs_two_distinct_points():
    assert fit_logit_trend([("a", 0.5, 0.4), ("b", 0.5, 0.3)]) is None
    t = fit_logit_trend([("a", 0.5, 0.5), ("b", 0.0, 0.0), ("c", 1.0, 1.0)])  # clipped, finite
    assert np.isfinite(t.slope) and t.slope == pytest.approx(1.0)


def test_outputs_exist_and_escape_submitted_text(site):
    _, out, board, _ = site
    index = (out / "index.html").read_text()
    assert "alpha &lt;b&gt;net&lt;/b&gt;" in index and "<b>net</b>" not in index
    for t in board.tables:
        for s in t.ood_shifts:
            assert (out / "plots" / t.protocol / f"{s}.png").read_bytes()[
                :8
            ] == b"\x89PNG\r\n\x1a\n"
        for e in t.entries:
            page = (out / "entries" / f"{e.id}.html").read_text()
            assert "&lt;b&gt;net&lt;/b&gt;" in page
    md = (out / "leaderboard.md").read_text()
    assert (
        "alpha &lt;b&gt;net&lt;/b&gt;" in md
        and "## Rejected submissions" in md
        and "`cheat.tar.gz`" in md
    )
    assert md.count("## Protocol ") == 2
    text = "\n".join(p.extract_text() for p in PdfReader(out / "leaderboard.pdf").pages)
    assert "alpha <b>net</b>" in text and "cheat.tar.gz" in text and "Rejected submissions" in text


def test_site_without_baseline_ranks_by_ood(tmp_path, site):
    root, *_ = site
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(root / "subs" / "alpha.tar.gz", subs)
    shutil.copy(root / "subs" / "beta.tar.gz", subs)
    board = build_leaderboard(
        subs, tmp_path / "site", required=toy.SUITE, spec_lookup=toy.lookup, progress=False
    )
    (t,) = board.tables
    assert all(e.avg_er is None and e.rank_er is None for e in t.entries)
    assert [e.rank_ood for e in t.entries] == [1, 2]
    assert (
        "No baseline trend for toy-v2, toy-r, toy-o"
        in (tmp_path / "site" / "index.html").read_text()
    )
    assert os.path.exists(tmp_path / "site" / "leaderboard.pdf")
