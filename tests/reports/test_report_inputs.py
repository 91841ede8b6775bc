"""``report`` on hostile or careless inputs: malformed rows, duplicate rows, mathtext names, two
run directories with one folder name, and output paths that are folders."""

import json
from pathlib import Path

import pytest
from pypdf import PdfReader
from test_report import _run_dir, _table

from harness.cli import main


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


@pytest.mark.parametrize(
    "outputs,message",
    [
        # the summary replaced the PDF, and both were reported written
        ({"--out": "same", "--json": "same"}, "--out and --json are both"),
        # the PNG folder was swapped in whole: the PDF (or summary, or figures) reported written was gone
        ({"--out": "pages/r.pdf", "--png-dir": "pages"}, "--out {}/pages/r.pdf is inside --png-dir"),
        ({"--json": "pages/s.json", "--png-dir": "pages"}, "--json {}/pages/s.json is inside --png-dir"),
        ({"--figures-dir": "pages/figs", "--png-dir": "pages"}, "--figures-dir {}/pages/figs is inside --png-dir"),
        # a FileExistsError traceback, after the PDF had been written
        ({"--figures-dir": "afile"}, "--figures-dir {0}/afile: {0}/afile is a file, not a folder"),
        ({"--out": "afile/r.pdf"}, "--out {0}/afile/r.pdf: {0}/afile is a file, not a folder"),
        ({"--json": "afile/deeper/s.json"}, "--json {0}/afile/deeper/s.json: {0}/afile is a file, not a folder"),
    ],
)
def test_outputs_that_cannot_be_written_or_would_replace_one_another_are_one_line_and_leave_nothing(tmp_path, capsys, outputs, message):
    run = _run_dir(tmp_path)
    table = _table(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    before = sorted(tmp_path.rglob("*"))
    args = {"--out": "r.pdf", "--json": "s.json", **outputs}
    argv = ["report", "--no-testbed", str(table), str(run), "--bootstrap", "10"]
    for flag, name in args.items():
        argv += [flag, str(tmp_path / name)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(tmp_path) in err
    assert sorted(tmp_path.rglob("*")) == before


def test_an_input_named_twice_is_read_once(tmp_path):
    """``report runs/a ./runs/a``: every row was listed as a duplicate and the run's analysis
    pages were drawn twice."""
    from reports.report import ReportConfig, run_report

    run = _run_dir(tmp_path)
    base = dict(testbed=False, samples=0, out=None, json=None)
    once = run_report(ReportConfig(inputs=[_table(tmp_path), run], **base))
    twice = run_report(ReportConfig(inputs=[_table(tmp_path), run, tmp_path / "." / run.name, run], **base))
    assert twice["dropped"] == once["dropped"] and twice["models"] == once["models"]
    assert twice["inputs"] == [str(_table(tmp_path)), str(run)]
    assert twice["analyses"] == once["analyses"]


def test_one_long_model_name_leaves_the_summary_table_readable(tmp_path, monkeypatch):
    """A 3,000-character model name set the name column's width, so every row was padded to it
    and the whole table's font shrank to 0.4 pt (and the report took minutes). The name is now
    kept whole on lines of its own below its row; the table keeps its font."""
    from reports import pdf as pdf_module
    from reports.report import ReportConfig, run_report

    long = "resnet-" + "x" * 1500 + " " + "y" * 1500
    run = edited_run(tmp_path, lambda rows: [r.update(model=long) for r in rows])
    (tmp_path / "other").mkdir()
    other = _run_dir(tmp_path / "other")
    pages: list[tuple[str, str, float]] = []
    original = pdf_module._text_page

    def spy(pdf, title, body, size=pdf_module.PORTRAIT, fontsize=8.5, family="sans-serif"):
        pages.append((title, body, fontsize))
        original(pdf, title, body, size, fontsize, family)

    monkeypatch.setattr(pdf_module, "_text_page", spy)
    run_report(ReportConfig(inputs=[_table(tmp_path), run, other], testbed=False, samples=10, out=tmp_path / "r.pdf",
                            json=None, analyses=False))  # fmt: skip
    summary = [(body, size) for title, body, size in pages if title.startswith("Summary of highlighted models")]
    assert summary and min(size for _, size in summary) > 3
    text = "\n".join(body for body, _ in summary)
    assert max(len(line) for line in text.splitlines()) < 300
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("resnet-x"))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.startswith(("model ", "      ", "-")):
            continue  # the next page's column heads
        if not line.strip() or line.startswith(("my-model", "clipzs")):
            break
        block.append(line)
    assert all(len(body.splitlines()) <= pdf_module.TABLE_ROWS + 3 for body, _ in summary[:-1])  # nothing runs off a page
    assert "".join(x[: pdf_module.NAME_MAX] for x in block).rstrip("* ") == long  # the whole name, in order
    assert any(line.startswith("my-model ") and "run:other" in line for line in lines)
