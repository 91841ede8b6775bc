"""``report`` on hostile or careless inputs: malformed rows, duplicate rows, mathtext names, two
run directories with one folder name, and output paths that are folders."""

import json
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from test_report import _run_dir, _table

from harness.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from doubles import tree_state  # noqa: E402


def edited_run(tmp_path: Path, edit) -> Path:
    run = _run_dir(tmp_path)
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    edit(lines)
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda rows: rows[1]["metrics"].update(top1=float("nan")), "metrics.top1"),
        (lambda rows: rows[1]["metrics"].update(top1=None), "metrics.top1"),
        (lambda rows: rows[1].update(n="10000"), "'n'"),
        (lambda rows: rows[1].update(model=None), "'model'"),
        (lambda rows: rows[1].update(protocol=["a"]), "'protocol'"),
    ],
)
def test_a_malformed_row_is_one_line_naming_file_line_and_field(tmp_path, capsys, edit, field):
    run = edited_run(tmp_path, edit)
    assert main(["report", "--no-testbed", str(_table(tmp_path)), str(run), "--bootstrap", "10",
                 "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'results.jsonl'}:2:" in err and field in err
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "s.json").exists()


def test_duplicate_rows_for_one_setting_are_an_error_unless_identical(tmp_path, capsys):
    run = edited_run(tmp_path, lambda rows: rows.append(dict(rows[2])))  # an identical copy: kept once
    args = ["report", "--no-testbed", str(_table(tmp_path)), str(run), "--bootstrap", "10",
            "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]  # fmt: skip
    assert main(args) == 0
    (tmp_path / "x").mkdir()
    run = edited_run(tmp_path / "x", lambda rows: rows.append({**rows[2], "metrics": {"top1": 0.5}}))
    args[3] = str(run)
    assert main(args) == 2  # was: the last row silently won
    err = capsys.readouterr().err
    assert "results.jsonl:4: a second, different row for model 'my-model' on 'imagenet-r' (first at line 3)" in err


def test_mathtext_names_are_drawn_as_text(tmp_path, capsys):
    run = edited_run(tmp_path, lambda rows: [r.update(model="Model $\\foo$ x") for r in rows])
    pdf = tmp_path / "r.pdf"
    assert main(["report", "--no-testbed", str(_table(tmp_path)), str(run), "--bootstrap", "10",
                 "--out", str(pdf), "--json", str(tmp_path / "s.json")]) == 0, capsys.readouterr().err  # fmt: skip
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "$\\foo$" in text or "foo$" in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_two_run_directories_with_one_folder_name_stay_two_sources(tmp_path):
    (tmp_path / "exp1").mkdir()
    (tmp_path / "exp2").mkdir()
    a = _run_dir(tmp_path / "exp1")
    b = _run_dir(tmp_path / "exp2")
    a.rename(tmp_path / "exp1" / "run")
    b.rename(tmp_path / "exp2" / "run")
    assert main(["report", "--no-testbed", str(_table(tmp_path)), str(tmp_path / "exp1" / "run"), str(tmp_path / "exp2" / "run"),
                 "--bootstrap", "10", "--out", str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json")]) == 0  # fmt: skip
    sources = json.loads((tmp_path / "s.json").read_text())["sources"]
    assert sources.get("run:run") == 3 and sources.get("run:exp2/run") == 3  # was: one source of 6 rows


def test_out_or_json_that_is_a_folder_is_one_line_and_leaves_nothing(tmp_path, capsys):
    run = _run_dir(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    for flag in ("--out", "--json"):
        other = {"--out": str(tmp_path / "r.pdf"), "--json": str(tmp_path / "s.json")}
        other[flag] = str(folder)
        assert main(["report", "--no-testbed", str(_table(tmp_path)), str(run), "--bootstrap", "10",
                     "--out", other["--out"], "--json", other["--json"]]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a folder; give a" in err
    assert list(folder.iterdir()) == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


# (the refused report's output flags, given tmp_path with a file "taken" in it; what its error says)
REFUSED_OUTPUTS = {
    "PDF under a file": (lambda t: ["--out", t / "taken" / "r.pdf"], "--out {t}/taken/r.pdf: {t}/taken is a file, not a folder; give another path"),
    "summary under a file": (lambda t: ["--json", t / "taken" / "s.json"],
                             "--json {t}/taken/s.json: {t}/taken is a file, not a folder; give another path"),
    "figures folder that is a file": (lambda t: ["--figures-dir", t / "taken"],
                                      "--figures-dir {t}/taken exists and is not a folder; give a folder path"),
    "PDF and summary one file": (lambda t: ["--json", t / "new" / "r.pdf"],
                                 "--out and --json both name {t}/new/r.pdf: the summary would replace the PDF; give two paths"),
}


@pytest.mark.parametrize("case", list(REFUSED_OUTPUTS))
def test_an_output_path_that_cannot_be_written_is_refused_before_the_pdf(tmp_path, capsys, case):
    """The PDF is written first: an output refused after it would leave a report without its summary."""
    run = _run_dir(tmp_path)
    table = _table(tmp_path)
    (tmp_path / "taken").write_text("someone's file")
    flags, says = REFUSED_OUTPUTS[case]
    args = ["report", "--no-testbed", table, run, "--bootstrap", "10", "--out", tmp_path / "new" / "r.pdf",
            "--json", tmp_path / "new" / "s.json", *flags(tmp_path)]  # fmt: skip
    before = tree_state(tmp_path)
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    assert tree_state(tmp_path) == before
    assert capsys.readouterr().err.strip() == "shiftbench report: error: " + says.format(t=tmp_path)


def test_png_pages_go_to_their_own_folder_and_never_replace_someone_elses_files(tmp_path, capsys):
    run = _run_dir(tmp_path)
    pngs = tmp_path / "pages"

    def report_to(png_dir: Path) -> int:
        return main(["report", "--no-testbed", str(_table(tmp_path)), str(run), "--bootstrap", "10", "--out",
                     str(tmp_path / "r.pdf"), "--json", str(tmp_path / "s.json"), "--png-dir", str(png_dir)])  # fmt: skip

    assert report_to(pngs) == 0
    first = sorted(p.name for p in pngs.iterdir())
    assert first and all(n.startswith("page-") for n in first)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"mine")
    assert report_to(mine) == 2
    assert "holds files this command did not write (holiday.jpg)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]
