"""One vocabulary: the report reads the engine's Result rows under the engine's setting names,
and translates only foreign and legacy tables into them."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from report_rows import row
from scipy.special import expit, logit

from harness.api import Result
from reports import importers
from reports.report import ReportConfig, run_report
from reports.rows import model_tags, source_of
from reports.table import COLUMNS, read_table, write_table

#: Five standard models on logit(V2) = logit(ImageNet) - 0.5 and logit(R) = 0.8 logit(ImageNet).
X = np.array([0.60, 0.68, 0.74, 0.79, 0.83])


def _baseline(tmp_path: Path) -> Path:
    rows = []
    for i, x in enumerate(X):
        rows += [row("pub", f"std{i}", "imagenet", x, 50_000, tags=["standard"]),
                 row("pub", f"std{i}", "imagenetv2", expit(logit(x) - 0.5), 10_000, tags=["standard"]),
                 row("pub", f"std{i}", "objectnet-names", expit(0.8 * logit(x)), 18_574,
                     {"version": "1.0", "head": "objectnet-113-names", "projection": "none", "crop": "border-2px"},
                     ["standard"])]  # fmt: skip
    path = tmp_path / "pub.csv.gz"
    write_table(rows, path)
    return path


def _engine_run(tmp_path: Path) -> Path:
    """Rows as ``shiftbench run`` writes them: ``imagenetv2`` naming its ID setting, and a 113-way
    names head (``objectnet-names``, no ID setting of its own) of the same weights as a 1000-way
    head that has the ImageNet row."""
    info = {"weights_sha256": "ab" * 32, "arch": "ViT-B-32", "tags": ["clip", "zero-shot"]}
    names_proto = {"head": "objectnet-113-names", "projection": "none", "crop": "border-2px"}
    res = [
        Result("clip:b32", "imagenet", "imagenet", "2012", 50_000, 50_000, {"top1": 0.63, "top5": 0.88},
               provenance={"model": info, "source": "decode"}),
        Result("clip:b32", "imagenetv2", "imagenetv2", "imagenetv2-matched-frequency", 10_000, 10_000,
               {"top1": 0.56, "top5": 0.8}, protocol={"variant": "matched-frequency", "labels": "int(folder)"},
               provenance={"model": info, "source": "decode"}, id_setting="imagenet"),
        Result("clip:b32@objectnet-names", "objectnet-names", "objectnet-names", "1.0", 18_574, 18_574,
               {"top1": 0.44, "top5": 0.7}, protocol=names_proto, provenance={"model": info, "source": "cache"}),
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in res))
    return run


def test_the_report_places_engine_rows_under_the_engines_names(tmp_path):
    from pypdf import PdfReader

    out = tmp_path / "out"
    s = run_report(ReportConfig(inputs=[_baseline(tmp_path), _engine_run(tmp_path)], testbed=False, samples=0,
                                out=out / "report.pdf", json=out / "summary.json", figures_dir=out / "figs",
                                highlight=["source:run:run"], analyses=False))  # fmt: skip
    on_disk = json.loads((out / "summary.json").read_text())
    mine = {(m["model"], m["shift"]): m for m in on_disk["models"] if m["source"] == "run:run"}
    assert sorted(mine) == [("clip:b32", "imagenetv2"), ("clip:b32@objectnet-names", "objectnet-names")]
    v2, names = mine["clip:b32", "imagenetv2"], mine["clip:b32@objectnet-names", "objectnet-names"]
    assert (v2["x_setting"], v2["id_acc"], v2["ood_acc"], v2["ood_n"]) == ("imagenet", 0.63, 0.56, 10_000)
    # the names head borrows the ImageNet row of the same weights' 1000-way head
    assert (names["x_setting"], names["id_acc"], names["ood_acc"]) == ("imagenet", 0.63, 0.44)
    assert names["protocol"]["head"] == "objectnet-113-names"
    # each on its own trend, fitted on the baseline table under the same names: ER by hand
    for m, ood in ((v2, lambda x: expit(logit(x) - 0.5)), (names, lambda x: expit(0.8 * logit(x)))):
        assert m["effective_robustness"] == pytest.approx(m["ood_acc"] - ood(0.63), abs=1e-9)
    fitted = {(f["shift"], f["x_setting"]) for f in on_disk["fits"]}
    assert fitted == {("imagenetv2", "imagenet"), ("objectnet-names", "imagenet")}
    assert on_disk["dropped"] == [] and on_disk == json.loads(json.dumps(s))
    # no published-table name anywhere a reader or a script looks
    text = json.dumps(on_disk) + (out / "figs" / "summary.csv").read_text()
    assert "imagenetv2-matched-frequency" not in text and '"objectnet"' not in text
    header = next(csv.reader(io.StringIO((out / "figs" / "summary.csv").read_text())))
    assert {"imagenetv2 ood", "objectnet-names ood"} <= set(header)
    # the pages: display names in titles, the engine's names in the group labels
    pages = [p.extract_text() for p in PdfReader(out / "report.pdf").pages]
    (v2_page,) = [p for p in pages if "ImageNetV2 vs ImageNet\nimagenetv2 vs imagenet [format=original]" in p]
    (names_page,) = [p for p in pages if "ObjectNet (names head) vs ImageNet\nobjectnet-names vs imagenet [" in p]
    assert "clip:b32\n" in v2_page and "clip:b32@objectnet-names" in names_page


def test_an_older_table_under_the_published_names_is_read_in_the_engines(tmp_path):
    """A shiftbench table written before the vocabulary was the engine's: its two old names are
    translated, everything else is read as written."""
    old = tmp_path / "old.csv.gz"
    lines = [
        COLUMNS,
        ("timm", "resnet50", "imagenet", "0.8", "50000", "", "standard"),
        ("timm", "resnet50", "imagenetv2-matched-frequency", "0.7", "10000", "format=original", "standard"),
        ("open_clip", "clip:b32", "imagenet", "0.63", "50000", "", "clip;clip-zero-shot"),
        ("open_clip", "clip:b32", "objectnet", "0.44", "18574",
         "crop=none;head=objectnet-113-names;projection=none;version=1.0", "clip;clip-zero-shot"),
        ("imagenet-testbed", "resnet50", "objectnet", "0.3", "18514",
         "crop=border-2px;head=imagenet-1k;projection=max;version=1.0-beta", "standard"),
    ]  # fmt: skip
    with gzip.open(old, "wt", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(lines)
    assert importers.detect_format(old) == "shiftbench"
    rows = importers.load(old)
    assert all(isinstance(r, Result) for r in rows)
    got = {(source_of(r), r.model, r.setting): r for r in rows}
    assert sorted(got) == [("imagenet-testbed", "resnet50", "objectnet"), ("open_clip", "clip:b32", "imagenet"),
                           ("open_clip", "clip:b32", "objectnet-names"), ("timm", "resnet50", "imagenet"),
                           ("timm", "resnet50", "imagenetv2")]  # fmt: skip
    v2 = got["timm", "resnet50", "imagenetv2"]
    assert (v2.metrics, v2.n, v2.id_setting, dict(v2.protocol), model_tags(v2)) == (
        {"top1": 0.7}, 10_000, "imagenet", {"format": "original"}, ("standard",))
    names = got["open_clip", "clip:b32", "objectnet-names"]
    assert (names.id_setting, names.protocol["head"]) == ("imagenet", "objectnet-113-names")
    # the ImageNet-head ObjectNet keeps its name and its same-class pairing
    assert got["imagenet-testbed", "resnet50", "objectnet"].id_setting == "imagenet@objectnet"
    # written again, it speaks the engine's names and reads back the same
    new = tmp_path / "new.csv.gz"
    write_table(rows, new)
    assert "imagenetv2-matched-frequency" not in gzip.open(new, "rt").read()
    assert sorted(map(Result.to_json, read_table(new))) == sorted(map(Result.to_json, rows))


def test_a_table_row_keeps_its_metrics_and_images_count_through_a_round_trip(tmp_path):
    """One row, several lines: top-1 with its n, the main metric, and 'n of N' for a short run."""
    res = Result("m", "iwildcam", "iwildcam", "2.0", 90, 100, {"top1": 0.7, "macro_f1": 0.3, "top5": 0.9},
                 protocol={"split": "test"}, provenance={"results_source": "run:a", "model": {"tags": ["x"]}},
                 id_setting="iwildcam:id_test", main_metric="macro_f1")
    path = tmp_path / "t.csv"
    write_table([res], path)
    (back,) = read_table(path)
    assert (back.metrics, back.main_metric, back.n, back.n_expected, back.id_setting, dict(back.protocol)) == (
        {"top1": 0.7, "macro_f1": 0.3}, "macro_f1", 90, 100, "iwildcam:id_test", {"split": "test"})
    assert "images=90 of 100" in path.read_text()


@pytest.mark.parametrize("proto,n,message", [
    ("crop", "50000", r"t.csv:2: protocol 'crop' is not key=value entries"),
    ("", "lots", r"t.csv:2: n 'lots' is not a whole number"),
])  # fmt: skip
def test_a_malformed_table_line_is_an_error_naming_the_file_and_line(tmp_path, proto, n, message):
    """These raised Python's own messages (``dictionary update sequence element #0 ...``,
    ``invalid literal for int()``), naming no file."""
    f = tmp_path / "t.csv"
    with open(f, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([COLUMNS, ("mine", "m", "imagenet", "0.8", n, proto, "standard")])
    with pytest.raises(ValueError, match=message):
        read_table(f)
