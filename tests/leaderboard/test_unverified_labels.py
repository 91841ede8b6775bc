"""Forged labels and hostile names: a bundle's labels are its own word until checked against the
data, and user text drawn by matplotlib is never parsed as mathtext."""

import json

import leaderboard_toy as toy
import numpy as np
from test_submission import rewrite

from harness.api import Predictions
from harness.cli import main
from reports.submission import load_card, write_bundle

SUITE = ",".join(toy.SUITE)


def forged_run(run_dir):
    """A weak model whose toy-v2 labels were rewritten to its own argmax: 100% OOD top-1."""
    preds = toy.make_predictions("forged-net", 0.3, 5)
    p = preds["toy-v2"]
    preds["toy-v2"] = Predictions(p.model, p.shift, p.keys, p.logits.argmax(1).astype(np.int64), p.logits)
    for shift, pr in preds.items():
        pr.save(run_dir / "predictions" / toy.safe("forged-net") / f"{shift}.npz")
    rows = toy.result_rows("forged-net", preds)
    (run_dir / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in rows))
    (run_dir / "config.json").write_text(json.dumps({"models": ["forged-net"]}))
    assert {r.setting: r.metrics["top1"] for r in rows}["toy-v2"] == 1.0
    return run_dir


def bundles(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    honest = toy.write_run(tmp_path / "honest", {"honest-net": (0.7, 1)})
    write_bundle(honest, load_card(toy.write_card(tmp_path / "h.toml", name="Honest")), subs / "honest.tar.gz")
    forged = forged_run(tmp_path / "forged")
    write_bundle(forged, load_card(toy.write_card(tmp_path / "f.toml", name="Forged")), subs / "forged.tar.gz")
    data = tmp_path / "data"
    toy.write_dataset(data)
    return subs, data


def test_forged_labels_are_never_ranked_as_checked(tmp_path, capsys):
    subs, data = bundles(tmp_path)
    assert main(["validate", str(subs / "forged.tar.gz"), "--require", SUITE]) == 0
    assert "labels UNVERIFIED" in capsys.readouterr().out  # was: a plain OK

    site = tmp_path / "site"
    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE]) == 0
    assert "0 accepted, 2 rejected" in capsys.readouterr().out  # was: forged ranked first at 100%
    assert "[labels-unverified]" in (site / "leaderboard.md").read_text()

    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE, "--trust-labels"]) == 0
    md = (site / "leaderboard.md").read_text()
    assert "Forged [labels unverified]" in md and "Labels NOT checked against the dataset" in md
    assert "Forged [labels unverified]" in (site / "index.html").read_text()

    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE, "--data-root", str(data)]) == 0
    assert "1 accepted, 1 rejected" in capsys.readouterr().out
    md = (site / "leaderboard.md").read_text()
    assert "label-mismatch" in md and "every entry's keys and labels were checked" in md


def test_a_mathtext_name_is_drawn_as_text_and_a_failed_build_keeps_the_old_site(tmp_path, capsys, monkeypatch):
    subs, data = bundles(tmp_path)
    (subs / "forged.tar.gz").unlink()

    def rename(manifest, members):
        manifest["card"]["name"] = "Model $\\foo$ x"

    rewrite(subs / "honest.tar.gz", subs / "mathtext.tar.gz", rename)
    site = tmp_path / "site"
    args = ["leaderboard", str(subs), "--out", str(site), "--require", SUITE, "--data-root", str(data)]
    assert main(args) == 0, capsys.readouterr().err  # was: a mathtext ParseError, no index.html
    assert "Model $\\\\foo$ x" in (site / "leaderboard.md").read_text()  # Markdown escapes the backslash
    before = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}

    import reports.leaderboard.pdf as lb_pdf

    def broken(*a, **k):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(lb_pdf, "write_pdf", broken)
    monkeypatch.setenv("SHIFTBENCH_DEBUG", "")
    try:
        main(args)
    except RuntimeError:
        pass
    after = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert after == before  # the old site, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "f.toml", "forged", "h.toml", "honest", "site", "subs"]


def test_leaderboard_out_that_is_a_file_or_a_foreign_folder_is_one_line(tmp_path, capsys):
    subs, _ = bundles(tmp_path)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["leaderboard", str(subs), "--out", str(target), "--require", SUITE]) == 2
    assert "is not a folder" in capsys.readouterr().err and target.read_text() == "mine"
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    assert main(["leaderboard", str(subs), "--out", str(home), "--require", SUITE]) == 2
    assert "holds files this command did not write (thesis.tex)" in capsys.readouterr().err
    assert [p.name for p in home.iterdir()] == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
