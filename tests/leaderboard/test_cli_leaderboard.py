"""submit / validate / leaderboard from the command line, on shifts registered like plugins."""

import json

import leaderboard_toy as toy
import pytest

from harness.cli import main

SUITE = ",".join(toy.SUITE)


def test_submit_then_validate(tmp_path, run_dir, card, capsys):
    out = tmp_path / "sub.tar.gz"
    assert (
        main(["submit", str(run_dir), "--card", str(card), "--out", str(out), "--require", SUITE])
        == 0
    )
    assert "wrote" in capsys.readouterr().out and out.is_file()
    assert main(["validate", str(out), "--require", SUITE]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{out}: OK: toy-net, 6 settings recomputed; labels UNVERIFIED")
    data = tmp_path / "data"
    toy.write_dataset(data)
    again = tmp_path / "again.tar.gz"
    args = [
        "submit",
        str(run_dir),
        "--card",
        str(card),
        "--out",
        str(again),
        "--require",
        SUITE,
        "--data-root",
        str(data),
    ]
    assert main(args) == 0 and again.is_file()


def test_submit_refuses_wrong_claims_and_writes_nothing(tmp_path, run_dir, card, capsys):
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    rows[0]["metrics"]["top1"] = 0.0
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sub.tar.gz"
    assert (
        main(["submit", str(run_dir), "--card", str(card), "--out", str(out), "--require", SUITE])
        == 1
    )
    err = capsys.readouterr().err
    assert f"{run_dir}: [metric-mismatch] toy: claimed top1 0.0 but the predictions give" in err
    assert "no bundle written" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["model.toml"]


def test_a_refused_submit_leaves_no_folder_it_made(tmp_path, run_dir, card, capsys):
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    rows[0]["metrics"]["top1"] = 0.0
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bundles" / "v1" / "sub.tar.gz"
    argv = ["submit", str(run_dir), "--card", str(card), "--out", str(out), "--require", SUITE]
    assert main(argv) == 1
    assert "no bundle written" in capsys.readouterr().err
    assert not (tmp_path / "bundles").exists()


def test_bad_card_is_one_line(tmp_path, run_dir, capsys):
    card = tmp_path / "bad.toml"
    card.write_text('name = "a"\nname = "b"\n')
    assert (
        main(["submit", str(run_dir), "--card", str(card), "--out", str(tmp_path / "x.tar.gz")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"shiftbench submit: error: {card}: malformed TOML: Cannot overwrite a value"
    )
    assert "\n" not in err
    card.write_text('name = "a"\n')
    assert main(["submit", str(run_dir), "--card", str(card)]) == 2
    assert (
        "invalid model card: at (top level): 'architecture' is a required property"
        in capsys.readouterr().err
    )


def test_run_with_two_models_needs_a_choice(tmp_path, card, capsys):
    run = toy.write_run(tmp_path / "run", {"a": (0.5, 1), "b": (0.6, 2)})
    assert main(["submit", str(run), "--card", str(card), "--require", SUITE]) == 2
    assert (
        "holds 2 models (a, b); name one with run_model in the card or --model"
        in capsys.readouterr().err
    )
    out = tmp_path / "b.tar.gz"
    assert (
        main(
            [
                "submit",
                str(run),
                "--card",
                str(card),
                "--model",
                "b",
                "--out",
                str(out),
                "--require",
                SUITE,
            ]
        )
        == 0
    )


def test_validate_against_the_data(tmp_path, run_dir, card, capsys):
    out = tmp_path / "sub.tar.gz"
    main(["submit", str(run_dir), "--card", str(card), "--out", str(out), "--require", SUITE])
    data = tmp_path / "data"
    toy.write_dataset(data)
    assert main(["validate", str(out), "--require", SUITE, "--data-root", str(data)]) == 0
    (data / "toy-r" / "3" / "img_0003.png").unlink()
    (data / "toy-r" / "2").mkdir(exist_ok=True)
    (data / "toy-r" / "1" / "img_0001.png").rename(data / "toy-r" / "2" / "img_0001.png")
    capsys.readouterr()
    assert main(["validate", str(out), "--require", SUITE, "--data-root", str(data)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{out}: [key-mismatch] toy-r: keys differ from the dataset under {data}: 1 dataset keys not in the bundle, "
        "2 bundle keys not in the dataset (e.g. '2/img_0001.png', '1/img_0001.png', '3/img_0003.png')"
    ]


def test_labels_are_checked_against_the_data(tmp_path, bundle_with_label_edit):
    out, data = bundle_with_label_edit
    from reports.submission_validate import validate_bundle

    v = validate_bundle(out, required=toy.SUITE, data_root=data)
    assert "toy-v2: 1 bundled labels disagree with the dataset's ground truth" in [
        f.message for f in v.failures if f.code == "label-mismatch"
    ]


def test_leaderboard_command(tmp_path, run_dir, card, capsys):
    subs = tmp_path / "subs"
    main(
        [
            "submit",
            str(run_dir),
            "--card",
            str(card),
            "--out",
            str(subs / "a.tar.gz"),
            "--require",
            SUITE,
        ]
    )
    (subs / "junk.tar.gz").write_bytes(b"junk")
    site = tmp_path / "site"
    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE]) == 0
    assert "0 accepted, 2 rejected" in capsys.readouterr().out  # no --data-root: labels unchecked
    assert "[labels-unverified]" in (site / "leaderboard.md").read_text()
    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE, "--trust-labels"]) == 0
    assert "1 accepted, 1 rejected, 1 protocol table(s)" in capsys.readouterr().out
    assert {"index.html", "leaderboard.md", "leaderboard.pdf", "site.js"} <= {
        p.name for p in site.iterdir()
    }
    assert main(["leaderboard", str(tmp_path / "nope"), "--out", str(site)]) == 2


def test_an_out_path_under_a_file_is_one_line(tmp_path, run_dir, card, capsys):
    """``submit --out FILE/a.tar.gz`` and ``leaderboard --out FILE/site`` ended in a
    FileExistsError traceback."""
    (tmp_path / "afile").write_text("not a folder")
    assert main(["submit", str(run_dir), "--card", str(card), "--out", str(tmp_path / "afile" / "a.tar.gz"), "--require", SUITE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shiftbench submit: error:" in err and "afile" in err
    subs = tmp_path / "subs"
    assert main(["submit", str(run_dir), "--card", str(card), "--out", str(subs / "a.tar.gz"), "--require", SUITE]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(subs), "--out", str(tmp_path / "afile" / "site"), "--require", SUITE, "--trust-labels"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shiftbench leaderboard: error:" in err and "afile" in err
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_one_bundle_under_two_names_is_ranked_once(tmp_path, run_dir, card, capsys):
    """``a b.tar.gz`` and ``a_b.tar.gz`` with the same bytes were two entries with one entry id:
    the model was ranked twice and one entry page replaced the other."""
    import shutil

    subs = tmp_path / "subs"
    assert main(["submit", str(run_dir), "--card", str(card), "--out", str(subs / "a b.tar.gz"), "--require", SUITE]) == 0
    shutil.copy(subs / "a b.tar.gz", subs / "a_b.tar.gz")
    site = tmp_path / "site"
    capsys.readouterr()
    assert main(["leaderboard", str(subs), "--out", str(site), "--require", SUITE, "--trust-labels"]) == 0
    assert "1 accepted, 1 rejected" in capsys.readouterr().out
    assert "[duplicate-bundle] the same bundle as a b.tar.gz, which is listed" in (site / "leaderboard.md").read_text()
    assert len(list((site / "entries").iterdir())) == 1


def test_a_suite_of_id_sets_only_is_one_line_and_writes_nothing(tmp_path, run_dir, card, capsys):
    """``--require toy``: every entry had no shift to average over and the build died dividing by zero."""
    subs = tmp_path / "subs"
    assert main(["submit", str(run_dir), "--card", str(card), "--out", str(subs / "a.tar.gz"), "--require", "toy"]) == 0
    capsys.readouterr()
    site = tmp_path / "site"
    assert main(["leaderboard", str(subs), "--out", str(site), "--require", "toy", "--trust-labels"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--require toy names no distribution shift" in err
    assert not site.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.toml", "run", "subs"]


@pytest.fixture
def bundle_with_label_edit(tmp_path, run_dir, card):
    """A bundle whose toy-v2 labels were edited and the manifest's hashes fixed."""
    from test_submission import edit_predictions, rewrite

    from reports.submission import load_card, write_bundle

    src = tmp_path / "src.tar.gz"
    write_bundle(run_dir, load_card(card), src)

    def relabel(keys, labels, logits):
        labels[0] = 5
        return keys, labels, logits

    data = tmp_path / "data"
    toy.write_dataset(data)
    return rewrite(
        src,
        tmp_path / "edited.tar.gz",
        lambda m, mem: edit_predictions(m, mem, "toy-v2", relabel, tmp_path),
    ), data
