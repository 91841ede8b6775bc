"""The site builds from a folder of mixed valid and invalid submissions; ranks, intervals and
the trend are checked against values computed here by hand."""

import json
import math
import shutil

import leaderboard_toy as toy
import numpy as np
import pytest
from pypdf import PdfReader
from test_submission import raw_tar, rewrite

from harness.api import Result
from reports.leaderboard import build_leaderboard
from reports.leaderboard.ranking import Z95, competition_ranks, rank_ranges
from reports.leaderboard.trend import BaselinePoint, fit, points_from_testbed
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
        subs, out, required=toy.SUITE, baselines=[baseline], get_shift=toy.get_shift, progress=False, trust_labels=True
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


def _logit(p, n):
    p = min(max(p, 0.5 / n), 1 - 0.5 / n)  # the report layer clips half an example from 0 and 1
    return math.log(p / (1 - p))


def test_trend_and_effective_robustness_by_hand(site):
    root, _, board, _ = site
    rows = [
        Result.from_dict(json.loads(x))
        for x in (root / "baseline/results.jsonl").read_text().splitlines()
    ]
    top1 = {(r.model, r.setting): r.metrics["top1"] for r in rows}
    lx = np.array([_logit(top1[(m, "toy")], 40) for m in BASELINE_MODELS])
    ly = np.array([_logit(top1[(m, "toy-v2")], 20) for m in BASELINE_MODELS])
    # closed-form least squares in logit space
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    intercept = ly.mean() - slope * lx.mean()
    table = board.tables[0]
    t = table.trends["toy-v2"]
    assert [p.model for p in t.points] == sorted(BASELINE_MODELS)
    assert t.trend.slope == pytest.approx(slope) and t.trend.intercept == pytest.approx(intercept)
    e = next(e for e in table.entries if e.model == "alpha-net")
    p = e.points["toy-v2"]
    g = 1 / (1 + math.exp(-(slope * math.log(p.x / (1 - p.x)) + intercept)))
    assert p.er == pytest.approx(p.y - g)
    # the interval: OOD binomial term, the ID term through the trend's slope, the fit's spread
    assert t.slope_at(p.x) == pytest.approx(slope * g * (1 - g) / (p.x * (1 - p.x)), rel=1e-4)
    sampling = p.y * (1 - p.y) / 20 + t.slope_at(p.x) ** 2 * p.x * (1 - p.x) / 40
    fit_half = t.fit_half_width(p.x, p.y)
    assert fit_half > 0
    # the report's interval (reports.trend.er_interval): the binomial half-width combined in
    # quadrature with each side of the fit's bootstrap interval; the half-width is half of it
    (fit_lo,), (fit_hi,) = t.trend.er_interval(np.array([p.x]), np.array([p.y]), level=0.95)
    b = Z95 * math.sqrt(sampling)
    lo, hi = p.er - math.sqrt(b**2 + (p.er - fit_lo) ** 2), p.er + math.sqrt(b**2 + (fit_hi - p.er) ** 2)
    assert p.er_half == pytest.approx((hi - lo) / 2)
    assert p.er_half >= b and (hi - lo) / 2 >= fit_half / 2
    assert (p.n_x, p.n_y) == (40, 20)
    assert e.points["toy-r"].n_x == 16 and e.points["toy-o"].n_x == 20
    ys = [e.points[s].y for s in table.ood_shifts]
    assert e.avg_ood == pytest.approx(sum(ys) / 3)
    assert e.avg_ood_half == pytest.approx(
        Z95 * math.sqrt(sum(q * (1 - q) / n for q, n in zip(ys, (20, 12, 9), strict=True))) / 3
    )
    assert table.er_shifts == ("toy-v2", "toy-r", "toy-o")
    assert e.avg_er == pytest.approx(sum(e.points[s].er for s in table.ood_shifts) / 3)


def test_ranks():
    assert competition_ranks([0.5, 0.7, 0.5, 0.1]) == [2, 1, 2, 4]


def test_too_few_baseline_models_give_no_trend_and_say_why():
    t = fit([BaselinePoint("a", 0.5, 0.4, 100, 100), BaselinePoint("b", 0.6, 0.5, 100, 100)])
    assert t.trend is None and "at least 3 needed" in t.reason


def test_testbed_baseline_speaks_the_registered_names():
    """The testbed's rows carry the engine's setting names (imagenetv2 is matched-frequency); only
    standard models at the published protocol are used."""
    v2 = points_from_testbed("imagenetv2", "imagenet")
    r = points_from_testbed("imagenet-r", "imagenet@imagenet-r")
    assert len(v2) > 50 and len(r) > 50
    assert all(0 < p.x < 1 and 0 < p.y < 1 for p in v2 + r)
    assert {p.n_y for p in r} == {30_000}
    assert (
        points_from_testbed("objectnet", "imagenet") == []
    )  # the testbed has ObjectNet 1.0-beta only


@pytest.mark.parametrize("ood,id_setting", [("imagenet-a", "imagenet@imagenet-a"), ("imagenet-a", "imagenet"),
                                            ("imagenet-r", "imagenet@imagenet-r")])
def test_the_boards_testbed_trend_is_the_reports(ood, id_setting):
    """The report leaves ResNet-50, which ImageNet-A was selected against (~0% by construction),
    out of ImageNet-A baselines; the board kept it, so one entry had two effective robustnesses."""
    from reports.analysis import BaselineRule, analyse
    from reports.testbed import load_testbed

    (g,) = [g for g in analyse(load_testbed(), BaselineRule(), ("logit",), samples=0, shifts=[ood])
            if g.x_setting == id_setting and not g.protocol]
    board = fit(points_from_testbed(ood, id_setting)).trend
    assert board.n == g.fits["logit"].n
    assert (board.slope, board.intercept) == pytest.approx((g.fits["logit"].slope, g.fits["logit"].intercept), rel=1e-12)
    if ood == "imagenet-a":
        assert "imagenet-testbed:resnet50" not in {p.model for p in points_from_testbed(ood, id_setting)}


def test_baseline_files_are_checked_and_never_merged_by_model_name(tmp_path):
    """Two --baseline files that both hold ``base-0`` (two runs, two sets of weights): rows were
    keyed by model name alone, so the second file's base-0 replaced the first's (or lent it an ID
    row); a baseline row in percent or listed twice with two figures was used as it came."""
    from reports.leaderboard.trend import points_from_results, read_baseline

    a = toy.write_run(tmp_path / "a", {f"base-{i}": (s, 100 + i) for i, s in enumerate((0.1, 0.5, 0.9))}) / "results.jsonl"
    b = toy.write_run(tmp_path / "b", {"base-0": (0.7, 7)}) / "results.jsonl"
    rows = read_baseline([a, b])
    shifts = {r.shift: {"version": r.shift_version, "protocol": dict(r.protocol)} for r in rows if r.setting == r.shift}
    pts = points_from_results(rows, shifts, "toy-v2", "toy")
    assert sorted(p.model for p in pts) == ["base-0", "base-0", "base-1", "base-2"]
    own = {Result.from_dict(json.loads(x)).setting: Result.from_dict(json.loads(x))
           for x in b.read_text().splitlines() if json.loads(x)["model"] == "base-0"}  # fmt: skip
    assert (own["toy"].metrics["top1"], own["toy-v2"].metrics["top1"]) in {(p.x, p.y) for p in pts}
    lines = a.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["metrics"]["top1"] *= 100
    a.write_text("\n".join([json.dumps(bad), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1: metrics.top1: .* \(looks like percent"):
        read_baseline([a])
    a.write_text("\n".join([*lines, json.dumps({**json.loads(lines[0]), "n": 1})]) + "\n")
    with pytest.raises(ValueError, match="a second, different row for model 'base-0'"):
        read_baseline([a])


def test_markdown_cells_carry_no_link_or_image():
    """A card named ``[click](javascript:...)`` or ``![](https://tracker)`` was a live link or a
    remote image in leaderboard.md."""
    from reports.leaderboard.markdown import cell

    assert cell("[click](javascript:alert(1))") == "[click\\](javascript:alert(1))"
    assert cell("![x](https://t.example/p.png) [labels-unverified]") == "![x\\](https://t.example/p.png) [labels-unverified]"


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


def test_site_against_the_testbed_without_matching_shifts_ranks_by_ood(tmp_path, site):
    root, *_ = site
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(root / "subs" / "alpha.tar.gz", subs)
    shutil.copy(root / "subs" / "beta.tar.gz", subs)
    board = build_leaderboard(
        subs, tmp_path / "site", required=toy.SUITE, get_shift=toy.get_shift, progress=False, trust_labels=True
    )
    (t,) = board.tables
    assert all(e.avg_er is None and e.rank_er is None for e in t.entries)
    assert [e.rank_ood for e in t.entries] == [1, 2]
    note = (
        "No baseline trend for toy-v2 (no baseline models), toy-r (no baseline models), toy-o (no baseline models): "
        "effective robustness is not computed and entries are ranked by average OOD top-1."
    )
    assert note in (tmp_path / "site" / "index.html").read_text()
    assert note in (tmp_path / "site" / "leaderboard.md").read_text()
    # the PDF said nothing of it (its table pages had no trend note)
    pdf_text = " ".join(" ".join(p.extract_text() for p in PdfReader(tmp_path / "site" / "leaderboard.pdf").pages).split())
    assert note in pdf_text


def test_the_pdf_never_shows_two_long_names_alike(site, tmp_path):
    """Names were clipped to 28 characters: two entries whose names differ after that read alike."""
    import dataclasses

    from reports.leaderboard.pdf import write_pdf

    _, _, board, _ = site
    t = board.tables[0]
    names = [f"a very long model name shared by both, variant {k}" for k in "AB"]
    entries = [dataclasses.replace(e, card={**e.card, "name": n}) for e, n in zip(t.entries, names, strict=False)]
    assert len(entries) == 2
    write_pdf(tmp_path / "lb.pdf", [dataclasses.replace(t, entries=entries)], [])
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(tmp_path / "lb.pdf").pages).split())
    assert all(n in text for n in names)


def test_rank_ranges_by_hand():
    # intervals: A [0.8, 1.0], B [0.55, 0.75], C [0.5, 0.7], D [0.1, 0.3]
    spans = rank_ranges([0.9, 0.65, 0.6, 0.2], [0.1, 0.1, 0.1, 0.1])
    # A: nobody wholly above; only A reaches 0.8 -> (1, 1). B: A wholly above; A, B, C reach 0.55 -> (2, 3).
    # C: A above; A, B, C reach 0.5 -> (2, 3). D: A, B, C wholly above; all reach 0.1 -> (4, 4).
    assert spans == [(1, 1), (2, 3), (2, 3), (4, 4)]


def test_rank_text(site):
    _, out, board, _ = site
    for e in board.accepted:
        lo, hi = e.rank_ood_range
        assert lo <= e.rank_ood <= hi
        assert e.rank_text("ood") == (str(e.rank_ood) if lo == hi else f"{e.rank_ood} ({lo}–{hi})")
        assert e.rank_text("ood") in (out / "leaderboard.md").read_text()


def test_rebuild_reuses_validation_of_unchanged_bundles(site, tmp_path, monkeypatch):
    import reports.leaderboard as lb

    root, *_ = site
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("alpha.tar.gz", "cheat.tar.gz"):
        shutil.copy(root / "subs" / name, subs)
    out = tmp_path / "site"
    first = build_leaderboard(
        subs, out, required=toy.SUITE, get_shift=toy.get_shift, progress=False, trust_labels=True
    )
    assert len(list((out / ".validation").glob("*.json"))) == 2
    calls = []
    real = lb.validate_bundle
    monkeypatch.setattr(
        lb, "validate_bundle", lambda *a, **k: calls.append(a[0].name) or real(*a, **k)
    )
    again = build_leaderboard(
        subs, out, required=toy.SUITE, get_shift=toy.get_shift, progress=False, trust_labels=True
    )
    assert calls == []
    assert [e.id for e in again.accepted] == [e.id for e in first.accepted]
    assert again.rejected == first.rejected
    assert [(e.avg_ood, e.avg_ood_half) for e in again.accepted] == [
        (e.avg_ood, e.avg_ood_half) for e in first.accepted
    ]
    shutil.copy(root / "subs" / "beta.tar.gz", subs / "alpha.tar.gz")  # changed content, same name
    build_leaderboard(subs, out, required=toy.SUITE, get_shift=toy.get_shift, progress=False, trust_labels=True)
    assert calls == ["alpha.tar.gz"]
    build_leaderboard(
        subs, out, required=toy.SUITE, get_shift=toy.get_shift, progress=False, trust_labels=True, fresh=True
    )
    assert calls == ["alpha.tar.gz", "alpha.tar.gz", "cheat.tar.gz"]


def test_a_changed_dataset_revalidates_every_bundle(site, tmp_path):
    """Validations were cached by the data root's path alone: after the dataset there changed (an
    image gone), a bundle checked against the old data stayed accepted on the next build."""
    root, *_ = site
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(root / "subs" / "alpha.tar.gz", subs)
    data = tmp_path / "data"
    toy.write_dataset(data)
    out = tmp_path / "site"
    first = build_leaderboard(subs, out, required=toy.SUITE, data_root=data, get_shift=toy.get_shift, progress=False)
    assert len(first.accepted) == 1 and not first.rejected
    next(p for p in sorted((data / "toy-v2").rglob("*.png"))).unlink()
    again = build_leaderboard(subs, out, required=toy.SUITE, data_root=data, get_shift=toy.get_shift, progress=False)
    assert not again.accepted
    ((name, reasons),) = again.rejected
    assert name == "alpha.tar.gz" and any(r.startswith("[key-mismatch] toy-v2: keys differ") for r in reasons)


def test_a_class_map_shipped_with_the_data_pairs_the_shift_with_its_same_class_view(tmp_path):
    """ObjectNet's map comes from its mapping files: with --data-root the leaderboard completes the
    spec from the data and pairs the shift with ``imagenet@objectnet`` (here ``toy@toy-o``), not
    with full ImageNet."""
    from reports.leaderboard import completed_specs
    from reports.leaderboard.ranking import setting_pairs

    data = tmp_path / "data"
    toy.write_dataset(data)
    without = completed_specs(toy.SUITE, toy.get_shift_late_map, None)
    assert setting_pairs(toy.SUITE, without)["toy-o"] == "toy"  # the map is unknown without data
    specs = completed_specs(toy.SUITE, toy.get_shift_late_map, data)
    assert specs["toy-o"].class_map == toy.O_MAP
    assert setting_pairs(toy.SUITE, specs) == {"toy-v2": "toy", "toy-r": "toy@toy-r", "toy-o": "toy@toy-o"}
    subs = tmp_path / "subs"
    subs.mkdir()
    run = toy.write_run(tmp_path / "run", {"net": (0.8, 1)})
    write_bundle(run, load_card(toy.write_card(tmp_path / "m.toml", name="net")), subs / "net.tar.gz")
    board = build_leaderboard(subs, tmp_path / "site", required=toy.SUITE, get_shift=toy.get_shift_late_map,
                              data_root=data, progress=False)  # fmt: skip
    (entry,) = board.accepted
    assert entry.points["toy-o"].id_setting == "toy@toy-o"
