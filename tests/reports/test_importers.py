"""Importers on real rows of each format, unit conversion at the boundary, and bad input."""

import dataclasses
import json
from pathlib import Path

import pytest

from harness.api import Result
from reports import importers
from reports.rows import model_tags, report_tags, source_of
from reports.vocabulary import protocol_key

PUBLISHED = Path(__file__).resolve().parents[2] / "data" / "published"


def _by(rows, model, setting) -> Result:
    (row,) = [r for r in rows if r.model == model and r.setting == setting]
    return row


def _key(row: Result):
    return protocol_key(row.setting, row.protocol, row.shift_version)


def _head(src: Path, dst: Path, keep) -> Path:
    """Copy the header and the rows of ``src`` whose first field is in ``keep`` (real rows, real layout)."""
    lines = src.read_text().splitlines()
    dst.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0] in keep]) + "\n")
    return dst


def test_timm_percent_to_fraction_and_sizes(tmp_path):
    keep = {"resnet50.a1_in1k", "convnext_xlarge.fb_in22k_ft_in1k", "eva_giant_patch14_336.clip_ft_in1k"}
    f = _head(PUBLISHED / "timm/results-imagenet.csv", tmp_path / "results-imagenet.csv", keep)
    rows = importers.load(f)
    assert importers.detect_format(f) == "timm"
    r = _by(rows, "resnet50.a1_in1k@288px", "imagenet")
    assert r.metrics["top1"] == pytest.approx(0.8124) and r.n == 50_000 and model_tags(r) == ("standard",)
    assert _by(rows, "resnet50.a1_in1k@224px", "imagenet").metrics["top1"] == pytest.approx(0.80382)
    # a model at two image sizes becomes two models; "1,013.01" param counts do not disturb parsing
    assert _by(rows, "convnext_xlarge.fb_in22k_ft_in1k@288px", "imagenet").metrics["top1"] == pytest.approx(0.87378)
    assert _by(rows, "convnext_xlarge.fb_in22k_ft_in1k@224px", "imagenet").metrics["top1"] == pytest.approx(0.8697)
    assert model_tags(_by(rows, "eva_giant_patch14_336.clip_ft_in1k", "imagenet")) == ("clip", "more-data")


def test_timm_clean_file_is_the_id_view_on_200_classes(tmp_path):
    f = _head(PUBLISHED / "timm/results-imagenet-r-clean.csv", tmp_path / "results-imagenet-r-clean.csv", {"resnet50.a1_in1k"})
    r = _by(importers.load(f), "resnet50.a1_in1k@288px", "imagenet@imagenet-r")
    assert (r.setting, r.metrics["top1"], r.n) == ("imagenet@imagenet-r", pytest.approx(0.9431), 10_000)


def test_open_clip_fractions_and_objectnet_protocol(tmp_path):
    lines = (PUBLISHED / "open_clip/openclip_results.csv").read_text().splitlines()
    f = tmp_path / "openclip_results.csv"
    f.write_text("\n".join([lines[0]] + [ln for ln in lines if ln.startswith("ViT-B-32,openai,")]) + "\n")
    rows = importers.load(f)
    assert importers.detect_format(f) == "open_clip"
    m = "clip:ViT-B-32@openai"
    assert _by(rows, m, "imagenet").metrics["top1"] == 0.6332
    assert _by(rows, m, "imagenet-sketch").metrics["top1"] == 0.4229
    assert _by(rows, m, "imagenetv2").metrics["top1"] == 0.5592
    assert _by(rows, m, "imagenet-a").metrics["top1"] == 0.3155
    assert _by(rows, m, "imagenet-r").metrics["top1"] == 0.6933
    # CLIP_benchmark measured this column with a 113-way head from ObjectNet's names: objectnet-names
    assert not [r for r in rows if r.setting == "objectnet"]
    obj = _by(rows, m, "objectnet-names")
    assert obj.metrics["top1"] == 0.4431 and dict(obj.protocol)["head"] == "objectnet-113-names"
    assert _key(obj) == (("crop", "none"), ("head", "objectnet-113-names"), ("projection", "none"), ("version", "1.0"))
    assert "clip-zero-shot" in model_tags(obj) and "standard" not in model_tags(obj)
    assert (obj.id_setting, obj.main_metric, obj.n, obj.n_expected) == ("imagenet", "top1", 18_574, 18_574)


def test_testbed_columns_types_and_protocols(tmp_path):
    src = PUBLISHED / "imagenet_testbed"
    f = _head(src / "robustness_top1s.csv", tmp_path / "robustness_top1s.csv", {"resnet50", "FixResNeXt101_32x48d_v2"})
    (tmp_path / "model_types.json").write_text((src / "model_types.json").read_text())
    rows = importers.load(f)
    assert importers.detect_format(f) == "imagenet-testbed"
    r = _by(rows, "resnet50", "imagenet")
    assert r.metrics["top1"] == pytest.approx(0.761300048828125) and model_tags(r) == ("standard",)
    v2 = _by(rows, "resnet50", "imagenetv2")
    assert v2.metrics["top1"] == pytest.approx(0.63209999) and dict(v2.protocol) == {"format": "format-val"}
    a = _by(rows, "resnet50", "imagenet-a")
    assert a.metrics["top1"] == 0.0 and a.n == 7_500
    obj = _by(rows, "resnet50", "objectnet")
    assert obj.n == 18_514
    assert dict(obj.protocol) == {"version": "1.0-beta", "head": "imagenet-1k", "projection": "max", "crop": "border-2px"}
    assert _by(rows, "resnet50", "imagenet@objectnet").metrics["top1"] == pytest.approx(0.7886400604)
    assert _by(rows, "resnet50", "imagenet@imagenet-r").metrics["top1"] == pytest.approx(0.921199984)
    assert _by(rows, "resnet50", "imagenet-sketch").n == 50_889
    assert model_tags(_by(rows, "FixResNeXt101_32x48d_v2", "imagenet")) == ("more-data",)


def test_testbed_without_types_is_untyped(tmp_path):
    f = _head(PUBLISHED / "imagenet_testbed/robustness_top1s.csv", tmp_path / "top1.csv", {"resnet50"})
    assert {model_tags(r) for r in importers.load(f)} == {("untyped",)}


def test_wiseft_results_db(tmp_path):
    f = tmp_path / "results.jsonl"
    base = {"model": "ViT-B/32", "train_dataset": "ImageNet", "load": ["zs.pt", "ft.pt"], "template": "openai_imagenet_template"}
    rows = [
        {**base, "alpha": [0.0], "ImageNet:top1": 0.6332, "ImageNetV2:top1": 0.5592, "ImageNetR:top1": 0.6933, "ObjectNet:top1": 0.4431},
        {**base, "alpha": [0.5], "ImageNet:top1": 0.79, "ImageNetV2:top1": 0.68, "ImageNetR:top1": 0.70, "ImageNetA:top1": 0.3},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert importers.detect_format(f) == "wiseft"
    out = importers.load(f)
    zs = _by(out, "ViT-B/32 alpha=0.0", "imagenet")
    assert zs.metrics["top1"] == 0.6332 and "clip-zero-shot" in model_tags(zs)
    assert _by(out, "ViT-B/32 alpha=0.5", "imagenet-a").metrics["top1"] == 0.3
    assert "wiseft" in model_tags(_by(out, "ViT-B/32 alpha=0.5", "imagenet"))
    assert _key(_by(out, "ViT-B/32 alpha=0.0", "objectnet")) == (
        ("crop", "none"), ("head", "imagenet-1k"), ("projection", "max"), ("version", "1.0"))


def test_model_soups_jsonl(tmp_path):
    f = tmp_path / "greedy_soup_results.jsonl"
    f.write_text(json.dumps({"model_name": "greedy_soup", "ImageNet2p": 0.83, "ImageNet": 0.8103, "ImageNetV2": 0.7098,
                             "ImageNetSketch": 0.5297, "ImageNetR": 0.7236, "ObjectNet": 0.5254, "ImageNetA": 0.5082}) + "\n")
    assert importers.detect_format(f) == "soups"
    rows = importers.load(f)
    assert {r.setting for r in rows} == {"imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "objectnet", "imagenet-a"}
    assert _by(rows, "greedy_soup", "imagenet-sketch").metrics["top1"] == 0.5297
    assert "soup" in model_tags(_by(rows, "greedy_soup", "imagenet"))


def _result(model, setting, top1, n, tags=("zero-shot", "clip"), **kw) -> Result:
    shift = setting.split("@")[-1] if "@" in setting else setting
    return Result(model=model, setting=setting, shift=shift, shift_version=kw.pop("version", "1"), n=n, n_expected=n,
                  metrics={"top1": top1, "top5": min(1.0, top1 + 0.1)}, provenance={"model": {"name": model, "tags": list(tags)}}, **kw)


def test_engine_rows_are_read_as_written(tmp_path):
    """Rows as the engine writes them (shift specs of shifts/imagenet_shifts.py and shifts/objectnet.py):
    every field kept, the engine's setting names included; only the input is recorded."""
    res = [
        _result("m", "imagenetv2", 0.70, 10_000, version="imagenetv2-matched-frequency",
                protocol={"variant": "matched-frequency", "labels": "int(folder)"}),
        _result("m", "imagenetv2-top-images", 0.75, 10_000, version="imagenetv2-top-images"),
        _result("m", "objectnet", 0.40, 18_574, version="1.0", protocol={
            "head": "imagenet-1k", "projection": "max", "crop": "border-2px"}),
        _result("n", "objectnet-names", 0.45, 18_574, version="1.0", protocol={
            "head": "objectnet-113-names", "projection": "none", "crop": "border-2px"}),
        _result("m", "imagenet@objectnet", 0.8, 6_250, version="2012", protocol={
            "view": "imagenet restricted to objectnet classes", "projection": "max"}),
    ]
    f = tmp_path / "results.jsonl"
    f.write_text("".join(r.to_json() + "\n" for r in res))
    rows = importers.load(f)
    assert all(isinstance(r, Result) for r in rows)
    # other ImageNetV2 variants keep their own names and never join the matched-frequency trend
    assert {(r.model, r.setting) for r in rows} == {
        ("m", "imagenetv2"), ("m", "imagenetv2-top-images"), ("m", "objectnet"), ("n", "objectnet-names"),
        ("m", "imagenet@objectnet")}
    for got, written in zip(rows, res, strict=True):
        assert source_of(got) == f"run:{tmp_path.name}"
        assert dataclasses.replace(got, provenance={k: v for k, v in got.provenance.items() if k != "results_source"}) == written
    assert _key(_by(rows, "m", "imagenetv2")) == (("format", "original"),)
    assert _key(_by(rows, "m", "objectnet")) == (
        ("crop", "border-2px"), ("head", "imagenet-1k"), ("projection", "max"), ("version", "1.0"))
    assert _key(_by(rows, "n", "objectnet-names")) == (
        ("crop", "border-2px"), ("head", "objectnet-113-names"), ("projection", "none"), ("version", "1.0"))
    assert _key(_by(rows, "m", "imagenet@objectnet")) == (("head", "imagenet-1k"), ("projection", "max"))
    assert "clip-zero-shot" in report_tags(_by(rows, "m", "objectnet"))


def test_run_directory_results_jsonl(tmp_path):
    run = tmp_path / "b32"
    run.mkdir()
    res = [
        _result("clip:ViT-B-32@openai", "imagenet", 0.6333, 50_000),
        _result("clip:ViT-B-32@openai", "imagenet@imagenet-r", 0.85, 10_000),
        _result("clip:ViT-B-32@openai", "imagenet-r", 0.6934, 30_000),
        _result("clip:ViT-B-32@openai", "objectnet", 0.44, 18_574, version="1.0",
                protocol={"head": "imagenet-1k", "projection": "max", "crop": "border-2px"}),
    ]
    (run / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in res))
    assert importers.detect_format(run) == "results"
    rows = importers.load(run)
    r = _by(rows, "clip:ViT-B-32@openai", "imagenet@imagenet-r")
    assert (source_of(r), r.metrics["top1"], r.n, report_tags(r)) == ("run:b32", 0.85, 10_000, ("clip", "clip-zero-shot", "zero-shot"))
    assert _key(_by(rows, "clip:ViT-B-32@openai", "objectnet")) == (
        ("crop", "border-2px"), ("head", "imagenet-1k"), ("projection", "max"), ("version", "1.0"))


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("results-imagenet.csv", "model,img_size,top1\nresnet50.a1_in1k,224,180.5\n", r"outside \[0, 100\]"),
        ("results-imagenet.csv", "model,img_size,top1\nresnet50.a1_in1k,224,0.8124\nresnet18.a1_in1k,224,0.71\n", "holds fractions"),
        ("results-imagenet.csv", "model,img_size,top5\nresnet50.a1_in1k,224,95.1\n", "unknown results format"),
        ("results-whatever.csv", "model,img_size,top1\nresnet50.a1_in1k,224,80.1\n", "cannot tell the setting"),
        ("oc.csv", "name,pretrained,ImageNet 1k\nViT-B-32,openai,0.6\n", r"lacks columns \['ImageNet v2'"),
        ("soup.jsonl", '{"model_name": "m", "ImageNet": 81.03}\n', "looks like percent"),
        ("soup.jsonl", '{"model_name": "m", "ImageNet": 0.8}\nnot json\n', r"soup.jsonl:2: not valid JSON"),
        ("notes.txt", "hello\n", "unknown results format"),
        # these raised a TypeError or AttributeError traceback, or a message naming no file
        ("wf.jsonl", '{"model": "B", "alpha": [0.1, 0.2], "ImageNet:top1": 0.7}\n', r"wf.jsonl:1: 'alpha' \[0.1, 0.2\] is not one number"),
        ("wf.jsonl", '{"model": "B", "alpha": "abc", "ImageNet:top1": 0.7}\n', r"wf.jsonl:1: 'alpha' 'abc' is not one number"),
        ("results-imagenet.csv", b"model,img_size,top1\nres\xffnet,224,70.0\n", "results-imagenet.csv: not UTF-8 text"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_file(tmp_path, name, text, match):
    f = tmp_path / name
    f.write_bytes(text) if isinstance(text, bytes) else f.write_text(text)
    with pytest.raises(ValueError, match=match) as exc:
        importers.load(f)
    assert name in str(exc.value) or "format" in str(exc.value)


@pytest.mark.parametrize("types", ['["resnet50"]', '{"resnet50": "STANDARD"}'])
def test_testbed_model_types_of_the_wrong_shape_name_the_file(tmp_path, types):
    (tmp_path / "robustness_top1s.csv").write_text("model,val,imagenet-r\nresnet50,76.1,36.2\n")
    (tmp_path / "model_types.json").write_text(types)
    with pytest.raises(ValueError, match=r"model_types.json: expected an object of model -> \{\"type\": ...\}"):
        importers.load(tmp_path / "robustness_top1s.csv")


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        importers.load(tmp_path / "nope.csv")
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    with pytest.raises(ValueError, match="unknown format 'xls'"):
        importers.load(f, "xls")


@pytest.mark.parametrize("fmt", ["wiseft", "soups", "open_clip", "imagenet-testbed", "shiftbench"])
def test_a_folder_given_a_file_format_is_a_clear_error(tmp_path, fmt):
    """``report --format wiseft runs/x`` ended in an IsADirectoryError traceback."""
    with pytest.raises(ValueError, match=f"a folder, and --format {fmt} reads a file"):
        importers.load(tmp_path, fmt)


def test_the_analysis_projects_a_result_without_renaming_it():
    """The fits read a row's top-1 and main metric under the row's own setting, ID setting and
    protocol codes; the report's tags add what the model's imply."""
    from reports.analysis import values

    def res(setting, metrics, id_setting=None, main="top1", protocol=None, tags=(), version="1.0", n=100, n_expected=100):
        return Result("m", setting, setting.split("@")[0], version, n, n_expected, metrics, None, protocol or {}, {}, "x",
                      {"model": {"tags": list(tags)}, "results_source": "run:x"}, id_setting, main)

    (v2,) = values(res("imagenetv2", {"top1": 0.5}, "imagenet", tags=["fake"]))
    assert (v2.setting, v2.id_setting, v2.metric, v2.n, v2.source) == ("imagenetv2", "imagenet", "top1", 100, "run:x")
    (top,) = values(res("imagenetv2-top-images", {"top1": 0.6}, "imagenet"))
    assert (top.setting, top.id_setting) == ("imagenetv2-top-images", "imagenet")  # a variant is its own setting
    (names,) = values(res("objectnet-names", {"top1": 0.3}, None, protocol={"head": "objectnet-113-names"}))
    # the engine's names-head spec names no ID setting: its known pairing is full ImageNet
    assert (names.setting, names.id_setting) == ("objectnet-names", "imagenet")
    (obj,) = values(res("objectnet", {"top1": 0.3}, "imagenet@objectnet", protocol={"projection": "max", "crop": "border-2px"},
                        tags=["clip", "zero-shot"]))
    assert obj.protocol_key() == (("crop", "border-2px"), ("head", "imagenet-1k"), ("projection", "max"), ("version", "1.0"))
    assert obj.id_setting == "imagenet@objectnet" and "clip-zero-shot" in report_tags(obj.row)
    # a WiSE-FT cell of the engine (models tag it wise-ft) carries the tag WiSE-FT's files get
    assert "wiseft" in report_tags(res("imagenet-r", {"top1": 0.2}, tags=["clip", "wise-ft"]))
    # a WILDS row gives top-1 and its main metric; only top-1 has a binomial size; n of N is kept
    vals = values(res("iwildcam", {"top1": 0.7, "macro_f1": 0.3}, "iwildcam:id_test", "macro_f1", n=90))
    assert [(v.metric, v.value, v.n, v.id_setting) for v in vals] == [
        ("top1", 0.7, 90, "iwildcam:id_test"), ("macro_f1", 0.3, None, "iwildcam:id_test")]
    assert vals[0].incomplete() == ("iwildcam: 90 of 100 images",)


def test_an_engine_row_without_its_main_metric_is_a_clear_error(tmp_path):
    row = Result("m", "iwildcam", "iwildcam", "1.0", 10, 10, {"top1": 0.7}, id_setting="iwildcam:id_test", main_metric="macro_f1")
    path = tmp_path / "results.jsonl"
    path.write_text(row.to_json() + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1: .* no 'macro_f1' metric \(its main metric\)"):
        importers.load(path)


def test_a_113_way_objectnet_head_is_paired_with_its_weights_imagenet_accuracy(tmp_path):
    """open_clip's ObjectNet protocol: a zero-shot head from ObjectNet's 113 class names cannot
    score ImageNet, so its point takes the ImageNet accuracy of the same weights' 1000-way head."""
    from reports.analysis import place
    from reports.importers import read_results_jsonl

    def row(model, setting, top1, sha, n):
        proto = {"head": "objectnet-113-names", "projection": "none"} if setting == "objectnet-names" else {}
        info = {"weights_sha256": sha, "arch": "ViT-B-32", "tags": ["clip", "zero-shot"]}
        return Result(model, setting, setting, "1.0", n, n, {"top1": top1}, None, proto, {}, "x", {"model": info})

    rows = [row("b32", "imagenet", 0.5, "aa", 1000), row("b32-names", "objectnet-names", 0.4, "aa", 113),
            row("other-names", "objectnet-names", 0.1, "bb", 113)]  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in rows))
    read = read_results_jsonl(path, "run:x")
    got = {(r.model, r.setting): r for r in read}
    assert sorted(got) == [("b32", "imagenet"), ("b32-names", "imagenet"), ("b32-names", "objectnet-names"),
                           ("other-names", "objectnet-names")]  # fmt: skip
    lent = got["b32-names", "imagenet"]
    assert (lent.metrics["top1"], lent.n, lent.provenance["id_row_of"]) == (0.5, 1000, "b32")
    assert got["b32-names", "objectnet-names"].protocol["head"] == "objectnet-113-names"
    assert "clip-zero-shot" in report_tags(lent)
    # no weights with an ImageNet row: nothing is lent, the point stays unpaired
    assert ("other-names", "imagenet") not in got
    points, dropped = place(read)
    assert [(p.model, p.shift, p.x_setting, p.x, p.y) for p in points] == [("b32-names", "objectnet-names", "imagenet", 0.5, 0.4)]
    assert ("other-names", "objectnet-names", "no-id-pair") in {(d.model, d.setting, d.reason) for d in dropped}


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """One real-layout input per format (rows cut from the vendored published files)."""
    timm = _head(PUBLISHED / "timm/results-imagenetv2-matched-frequency.csv", tmp_path / "results-imagenetv2-matched-frequency.csv",
                 {"resnet50.a1_in1k"})  # fmt: skip
    lines = (PUBLISHED / "open_clip/openclip_results.csv").read_text().splitlines()
    oc = tmp_path / "openclip_results.csv"
    oc.write_text("\n".join([lines[0]] + [ln for ln in lines if ln.startswith("ViT-B-32,openai,")]) + "\n")
    tb = _head(PUBLISHED / "imagenet_testbed/robustness_top1s.csv", tmp_path / "robustness_top1s.csv", {"resnet50"})
    wf = tmp_path / "wiseft.jsonl"
    wf.write_text(json.dumps({"model": "ViT-B/32", "alpha": [0.5], "ImageNet:top1": 0.79, "ImageNetV2:top1": 0.68,
                              "ObjectNet:top1": 0.5}) + "\n")  # fmt: skip
    soups = tmp_path / "greedy_soup_results.jsonl"
    soups.write_text(json.dumps({"model_name": "greedy_soup", "ImageNet": 0.81, "ImageNetV2": 0.71, "ObjectNet": 0.53}) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(_result("m", "imagenetv2", 0.7, 10_000, id_setting="imagenet").to_json() + "\n")
    from reports.table import write_table

    table = tmp_path / "mine.csv.gz"
    write_table(importers.load(soups), table)
    return {"timm": timm, "open_clip": oc, "imagenet-testbed": tb, "wiseft": wf, "soups": soups, "results": run,
            "shiftbench": table}  # fmt: skip


@pytest.mark.parametrize("fmt", importers.FORMATS)
def test_every_importer_returns_result_rows_in_the_engines_vocabulary(tmp_path, fmt):
    from reports.vocabulary import KNOWN_ID_SETTINGS, LEGACY_NAMES

    path = _inputs(tmp_path)[fmt]
    assert importers.detect_format(path) == fmt
    rows = importers.load(path)
    assert rows and all(type(r) is Result for r in rows)
    for r in rows:
        assert source_of(r) and r.setting not in LEGACY_NAMES and "top1" in r.metrics and 0 <= r.metrics["top1"] <= 1
        assert r.main_metric in r.metrics and r.shift == r.setting.partition("@")[0]
        assert r.id_setting == KNOWN_ID_SETTINGS.get(r.setting)  # each names what it pairs with
        assert r.n > 0 and r.n_expected == r.n  # published sizes where the table gives none
    assert "imagenetv2" in {r.setting for r in rows}
