"""From data to leaderboard through the real CLI: run -> score -> wiseft -> soup -> report ->
submit -> validate -> leaderboard on fixture data of every ImageNet shift and iWildCam, with a
tiny real CLIP architecture. Every number is recomputed here from the stored predictions and
the dataset's own conventions (folder names, mapping files), not through the harness's code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from journey import (  # noqa: E402
    IMAGENET_SHIFTS,
    NAMES_HEAD,
    OOD_SHIFTS,
    build,
    cli,
    fixture_sizes,
    publish,
    run_all,
    shift_classes,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIFTBENCH_CACHE", str(root / "cache"))
        j = build(root)
        j.published = {name: cls.spec for name, cls in shift_classes().items()}
        # With the published sizes (50,000 ImageNet images...), the fixture is incomplete: refused.
        j.refused = cli("run", "--model", "fake:x", "--shifts", "imagenet-r", "--run-dir", root / "runs" / "refused",
                        *j.common())  # fmt: skip
        with fixture_sizes(j.data) as sizes:
            j.sizes = sizes
            run_all(j)
            publish(j)
            yield j


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def by_setting(run_dir: Path, model: str) -> dict[str, dict]:
    return {r["setting"]: r for r in rows_of(run_dir) if r["model"] == model}


def named(run_dir: Path, prefix: str, suffix: str) -> str:
    """The one model of ``run_dir`` named ``prefix...suffix`` (default names carry weights hashes)."""
    (name,) = {r["model"] for r in rows_of(run_dir) if r["model"].startswith(prefix) and r["model"].endswith(suffix)}
    return name


def wiseft_at(run_dir: Path, alpha: str) -> str:
    return named(run_dir, "wiseft:journey-clip[zs ", f"](alpha={alpha})")


def load_predictions(run_dir: Path, model: str, shift: str) -> dict[str, np.ndarray]:
    from harness.engine.store import RunDir

    with np.load(RunDir(run_dir).predictions_path(model, shift), allow_pickle=False) as z:
        return {k: z[k] for k in ("keys", "labels", "logits")}


# -- the datasets' own conventions, read from the fixture files ----------------------------------


def imagenet_wnids(data: Path) -> list[str]:
    """ImageNet's class order: the sorted wnid folders of val (the devkit's pytorch order)."""
    return sorted(p.name for p in (data / "imagenet" / "val").iterdir() if p.is_dir())


def subset_wnids(data: Path, which: str) -> list[str]:
    """ImageNet-R/-A classes: their sorted wnid folders (README.txt is not a class)."""
    return sorted(p.name for p in (data / f"imagenet-{which}").iterdir() if p.is_dir())


def objectnet_classes(data: Path) -> tuple[list[str], list[list[int]]]:
    """ObjectNet's overlapping folders (sorted = label order) and the ImageNet indices of each,
    from the four mapping files: label -> "; "-joined ImageNet names -> devkit line -> pytorch index."""
    maps = data / "objectnet-1.0" / "mappings"
    folder_to_label = json.loads((maps / "folder_to_objectnet_label.json").read_text())
    label_to_names = json.loads((maps / "objectnet_to_imagenet_1k.json").read_text())
    lines = (maps / "imagenet_to_label_2012_v2").read_text().splitlines()
    line_of_pytorch = {int(k): v for k, v in json.loads((maps / "pytorch_to_imagenet_2012_id.json").read_text()).items()}
    pytorch_of_line = {line: p for p, line in line_of_pytorch.items()}
    folders = sorted(f for f, label in folder_to_label.items() if label in label_to_names)
    members = []
    for f in folders:
        names = label_to_names[folder_to_label[f]].split("; ")
        members.append(sorted(pytorch_of_line[lines.index(n)] for n in names))
    return folders, members


def folder_of(key: str) -> str:
    return key.split("/")[-2]


def top1(logits: np.ndarray, labels: list[int]) -> float:
    return float(np.sum(np.argmax(logits, axis=1) == np.asarray(labels))) / len(labels)


def expected_top1(data: Path, run_dir: Path, model: str) -> dict[str, tuple[float, int]]:
    """(top-1, n) of every setting of an ImageNet run, from its predictions and the raw layouts."""
    wnids = imagenet_wnids(data)
    index = {w: i for i, w in enumerate(wnids)}
    out = {}
    inet = load_predictions(run_dir, model, "imagenet")
    inet_logits = inet["logits"].astype(np.float32)
    inet_labels = [index[folder_of(k)] for k in inet["keys"]]
    assert list(inet["labels"]) == inet_labels
    out["imagenet"] = (top1(inet_logits, inet_labels), len(inet_labels))

    v2 = load_predictions(run_dir, model, "imagenetv2")
    v2_labels = [int(folder_of(k)) for k in v2["keys"]]  # folder "10" is class 10, not the 3rd folder
    assert list(v2["labels"]) == v2_labels
    out["imagenetv2"] = (top1(v2["logits"].astype(np.float32), v2_labels), len(v2_labels))

    sk = load_predictions(run_dir, model, "imagenet-sketch")
    sk_labels = [index[folder_of(k)] for k in sk["keys"]]
    assert list(sk["labels"]) == sk_labels
    out["imagenet-sketch"] = (top1(sk["logits"].astype(np.float32), sk_labels), len(sk_labels))

    for which in ("r", "a"):
        sub = subset_wnids(data, which)
        cols = [index[w] for w in sub]
        assert len(cols) == 200 and cols == sorted(cols)
        p = load_predictions(run_dir, model, f"imagenet-{which}")
        labels = [sub.index(folder_of(k)) for k in p["keys"]]
        assert list(p["labels"]) == labels
        out[f"imagenet-{which}"] = (top1(p["logits"].astype(np.float32)[:, cols], labels), len(labels))
        keep = [i for i, k in enumerate(inet["keys"]) if folder_of(k) in sub]
        id_labels = [sub.index(folder_of(inet["keys"][i])) for i in keep]
        out[f"imagenet@imagenet-{which}"] = (top1(inet_logits[keep][:, cols], id_labels), len(keep))

    folders, members = objectnet_classes(data)
    assert len(folders) == 113 and sum(map(len, members)) == 125
    on = load_predictions(run_dir, model, "objectnet")
    labels = [folders.index(folder_of(k)) for k in on["keys"]]
    assert list(on["labels"]) == labels
    projected = np.stack([on["logits"].astype(np.float32)[:, m].max(axis=1) for m in members], axis=1)
    out["objectnet"] = (top1(projected, labels), len(labels))
    owner = {i: k for k, m in enumerate(members) for i in m}
    keep = [i for i, y in enumerate(inet_labels) if y in owner]
    id_projected = np.stack([inet_logits[keep][:, m].max(axis=1) for m in members], axis=1)
    out["imagenet@objectnet"] = (top1(id_projected, [owner[inet_labels[i]] for i in keep]), len(keep))
    return out


# -- 1. run over every shift ---------------------------------------------------------------------


def test_published_sizes_refuse_the_fixture_before_any_model_loads(journey):
    status, _, err = journey.refused
    assert status == 2
    assert err.splitlines()[-1] == (
        "shiftbench run: error: imagenet is the ID reference of imagenet-r and is evaluated with it: "
        f"shift 'imagenet' under {journey.data}: 1000 examples in split 'test', expected 50000; "
        "the data is incomplete or not the expected version (see `shiftbench check-data`), or pass --allow-incomplete "
        "to score what is there (recorded as n < n_expected)"
    )
    assert not (journey.root / "runs" / "refused" / "results.jsonl").exists()


def test_run_pairs_every_ood_shift_with_its_id_view_and_scores_as_the_datasets_define(journey):
    rows = by_setting(journey.run, "clip:journey-clip")
    assert sorted(rows) == sorted([*IMAGENET_SHIFTS, "imagenet@imagenet-r", "imagenet@imagenet-a", "imagenet@objectnet"])
    want = expected_top1(journey.data, journey.run, "clip:journey-clip")
    assert {s: (r["metrics"]["top1"], r["n"]) for s, r in rows.items()} == want
    # The fixture holds one image per class: 1000 ImageNet classes, 200 of R/A, ObjectNet's 113
    # folders that overlap ImageNet (not its extra folders) collecting 125 ImageNet classes.
    assert {s: n for s, (_, n) in want.items()} == {
        "imagenet": 1000, "imagenetv2": 1000, "imagenet-sketch": 1000, "imagenet-r": 200, "imagenet@imagenet-r": 200,
        "imagenet-a": 200, "imagenet@imagenet-a": 200, "objectnet": 113, "imagenet@objectnet": 125}  # fmt: skip
    for ood in ("imagenet-r", "imagenet-a", "objectnet"):
        view = rows[f"imagenet@{ood}"]
        assert view["shift"] == "imagenet" and view["class_map"] == rows[ood]["class_map"] is not None
        assert view["protocol"] == rows[ood]["protocol"]
    assert all(rows[s]["class_map"] is None for s in ("imagenet", "imagenetv2", "imagenet-sketch"))


def test_objectnet_is_scored_through_the_class_map_read_from_its_mapping_files(journey):
    from harness.api import ClassMap

    folders, members = objectnet_classes(journey.data)
    from_files = ClassMap("objectnet-113", "imagenet-1k", tuple(folders), tuple(map(tuple, members)), "max")
    rows = by_setting(journey.run, "clip:journey-clip")
    assert rows["objectnet"]["class_map"] == rows["imagenet@objectnet"]["class_map"] == from_files.digest()
    # The fixture's mapping files list labels in reverse and give 12 classes two ImageNet ids:
    # the scores above used exactly those 125 ids (a many-to-one map, max over each class's ids).
    assert sum(len(m) == 2 for m in members) == 12
    assert rows["objectnet"]["protocol"]["crop"] == "border-2px"


def test_objectnet_with_a_113_way_name_head_is_scored_without_projection(journey):
    (row,) = [r for r in rows_of(journey.run) if r["model"] == NAMES_HEAD]
    folders, _ = objectnet_classes(journey.data)
    p = load_predictions(journey.run, NAMES_HEAD, "objectnet-names")
    labels = [folders.index(folder_of(k)) for k in p["keys"]]
    assert p["logits"].shape == (113, 113) and list(p["labels"]) == labels
    assert (row["setting"], row["class_map"], row["n"]) == ("objectnet-names", None, 113)
    assert row["metrics"]["top1"] == top1(p["logits"].astype(np.float32), labels)


def test_a_wilds_shift_runs_with_its_own_metrics(journey):
    from shifts.fixtures import IWILDCAM_ROWS

    rows = {r["setting"]: r for r in rows_of(journey.wilds)}
    assert sorted(rows) == ["iwildcam", "iwildcam:id_test"]  # the ID split, scored in the same run
    row, idr = rows["iwildcam"], rows["iwildcam:id_test"]
    assert (row["id_setting"], row["main_metric"], idr["id_setting"]) == ("iwildcam:id_test", "macro_f1", None)
    assert idr["n"] == sum(s == "id_test" for s, _, _ in IWILDCAM_ROWS) and idr["protocol"]["split"] == "id_test"
    p = load_predictions(journey.wilds, "fake:wilds", "iwildcam")
    test_rows = [y for s, _, y in IWILDCAM_ROWS if s == "test"]
    assert sorted(p["labels"].tolist()) == sorted(test_rows) and row["n"] == len(test_rows) == 5
    pred = np.argmax(p["logits"].astype(np.float32), axis=1)
    labels = p["labels"]
    f1s = []
    for c in np.unique(labels):  # WILDS: macro-F1 over the classes present in the true labels
        tp = np.sum((pred == c) & (labels == c))
        precision = tp / np.sum(pred == c) if np.sum(pred == c) else 0.0
        recall = tp / np.sum(labels == c)
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    assert row["metrics"]["top1"] == float(np.mean(pred == labels))
    assert row["metrics"]["macro_f1"] == pytest.approx(float(np.mean(f1s)), abs=1e-12)


# -- 2. score and rerun --------------------------------------------------------------------------


def test_score_rederives_identical_rows_and_a_rerun_reuses_every_cell(journey):
    assert journey.logs["results-after-score"] == journey.logs["results-before-score"]
    for name, run_dir in (("wilds", journey.wilds), ("wiseft", journey.wiseft), ("soup", journey.soup)):
        assert (run_dir / "results.jsonl").read_text() == journey.logs[f"{name}-before-score"], name
    events = [json.loads(line) for line in journey.logs["rerun"].splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "model_skipped" in kinds and not {"cell_start", "cell_predicted", "scored"} & set(kinds)
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert {r["status"] for r in summary["rows"]} == {"skipped"} and len(summary["rows"]) == 9
    assert journey.logs["results-after-rerun"] == journey.logs["results-after-score"]
    first = [json.loads(line) for line in journey.logs["run"].splitlines() if line.startswith("{")]
    # ImageNet was predicted once although three ID views and three OOD shifts use it.
    assert sorted(e["shift"] for e in first if e["event"] == "cell_predicted") == sorted(IMAGENET_SHIFTS)


# -- 3. WiSE-FT and greedy soup ------------------------------------------------------------------


def test_wiseft_endpoints_equal_the_zero_shot_and_fine_tuned_models(journey):
    rows = rows_of(journey.wiseft)
    name = {a: wiseft_at(journey.wiseft, a) for a in ("0", "0.5", "1")}
    assert sorted({r["model"] for r in rows}) == sorted(name.values())
    from models.checkpoints import file_sha256

    assert name["0.5"] == f"wiseft:journey-clip[zs {file_sha256(journey.ckpt['zs'])[:8]},ft {file_sha256(journey.ckpt['ft'])[:8]}](alpha=0.5)"
    for shift in ("imagenet", "imagenet-r"):
        zs = load_predictions(journey.run, "clip:journey-clip", shift)
        ft = load_predictions(journey.finetuned, "finetuned:journey-clip", shift)
        at = {a: load_predictions(journey.wiseft, name[a], shift) for a in ("0", "0.5", "1")}
        assert all(np.array_equal(p["keys"], zs["keys"]) for p in (ft, *at.values()))
        assert np.array_equal(at["0"]["logits"], zs["logits"])
        assert np.array_equal(at["1"]["logits"], ft["logits"])
        assert not np.array_equal(at["0.5"]["logits"], zs["logits"])
        assert not np.array_equal(at["0.5"]["logits"], ft["logits"])
    zs_rows, ft_rows = by_setting(journey.run, "clip:journey-clip"), by_setting(journey.finetuned, "finetuned:journey-clip")
    for setting in ("imagenet", "imagenet@imagenet-r", "imagenet-r"):
        assert by_setting(journey.wiseft, name["0"])[setting]["metrics"] == zs_rows[setting]["metrics"]
        assert by_setting(journey.wiseft, name["1"])[setting]["metrics"] == ft_rows[setting]["metrics"]
    half = by_setting(journey.wiseft, name["0.5"])["imagenet-r"]["provenance"]["model"]
    assert (half["alpha"], half["zeroshot"], half["finetuned"]) == (0.5, "clip:journey-clip", "finetuned:journey-clip")


def test_greedy_soup_decisions_follow_the_held_out_scores(journey):
    record = json.loads((journey.soup / "soups" / "greedy.json").read_text())
    rows = rows_of(journey.soup)
    held = {r["model"]: r["metrics"]["top1"] for r in rows if r["setting"] == "imagenet-heldout"}
    # Selection ran on held-out ImageNet train only: no ingredient or candidate has a reported shift.
    reported = {r["model"] for r in rows if r["setting"] != "imagenet-heldout"}
    greedy = named(journey.soup, "soup:journey-clip[", "](greedy,n=2)")
    assert reported == {greedy}
    assert greedy not in held
    files = [f"ft{i}.safetensors" for i in range(3)]
    singles = {n: held[named(journey.soup, "ingredient:journey-clip[", f"]({n})")] for n in files}
    from models.checkpoints import file_sha256
    from models.soups import soup_id

    sha = {n: file_sha256(journey.ckpt["ingredients"] / n) for n in files}
    assert {n: record["ingredients"][n]["sha256"] for n in files} == sha
    assert record["heldout"] == "imagenet-heldout" and record["individual_scores"] == singles
    assert record["order"] == sorted(singles, key=lambda n: -singles[n])  # stable on ties
    kept, best = [record["order"][0]], singles[record["order"][0]]
    assert record["steps"][0] == {"ingredient": kept[0], "heldout_score": best, "accepted": True, "best_so_far": best}
    for step, name in zip(record["steps"][1:], record["order"][1:], strict=True):
        score = held[f"candidate:journey-clip[{soup_id([sha[n] for n in [*kept, name]])}](n={len(kept) + 1})"]
        accepted = score > best  # strict improvement only
        if accepted:
            kept, best = [*kept, name], score
        assert step == {"ingredient": name, "heldout_score": score, "accepted": accepted, "best_so_far": best}
    assert record["accepted"] == kept and record["final_score"] == best
    # The ingredients were built for this (journey.write_checkpoints): the two half-heads each get
    # about half of the held-out set, their soup nearly all of it; the noisy head is rejected.
    assert record["order"] == files and kept == files[:2]
    assert best > max(singles.values())
    soup = by_setting(journey.soup, greedy)
    assert sorted(soup) == ["imagenet", "imagenet-r", "imagenet@imagenet-r"]
    described = soup["imagenet-r"]["provenance"]["model"]
    assert [i["file"] for i in described["ingredients"]] == kept
    # the soup describes itself, not the base model whose module it was loaded into
    from models.checkpoints import file_sha256

    assert "soup" in described["tags"] and described["weights"] is None
    assert described["weights_sha256"] not in {file_sha256(f) for f in journey.ckpt["ingredients"].iterdir()}


def test_greedy_soup_refuses_to_select_on_a_reported_shift(journey):
    status, _, err = cli("soup", "--model", "finetuned:journey-clip", *journey.clip_args(), "--model-arg",
                         f"weights={journey.ckpt['ft']}", "--ingredients", journey.ckpt["ingredients"], "--recipe",
                         "greedy", "--held-out", "imagenet", "--shifts", "imagenet-r", "--run-dir",
                         journey.root / "runs" / "bad-soup", *journey.common())  # fmt: skip
    assert status == 2 and "--held-out imagenet is also reported" in err
    assert not (journey.root / "runs" / "bad-soup").exists()


# -- 4. report against the testbed ----------------------------------------------------------------

#: The OOD settings the engine writes, under which the report places them (the engine's names).
SHIFTS = ("imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")
#: The ID reference each OOD shift is paired with: its same-class view where it has one.
ID_OF = {"imagenetv2": "imagenet", "imagenet-sketch": "imagenet", "imagenet-r": "imagenet@imagenet-r",
         "imagenet-a": "imagenet@imagenet-a", "objectnet": "imagenet@objectnet"}  # fmt: skip


def logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def test_report_places_the_run_against_the_testbed_trend(journey):
    summary = json.loads((journey.root / "report" / "summary.json").read_text())
    rows = by_setting(journey.run, "clip:journey-clip")
    mine = {m["shift"]: m for m in summary["models"] if m["model"] == "clip:journey-clip" and m["source"] == "run:clip"}
    assert sorted(mine) == sorted(SHIFTS)
    for shift in SHIFTS:
        m = mine[shift]
        assert m["highlighted"] and "clip-zero-shot" in m["tags"]
        assert m["x_setting"] == ID_OF[shift]
        assert (m["ood_acc"], m["ood_n"]) == (rows[shift]["metrics"]["top1"], rows[shift]["n"])
        assert (m["id_acc"], m["id_n"]) == (rows[ID_OF[shift]]["metrics"]["top1"], rows[ID_OF[shift]]["n"])
        fits = [f for f in summary["fits"] if (f["shift"], f["x_setting"], f["protocol"], f["transform"])
                == (m["shift"], m["x_setting"], m["protocol"], "logit")]  # fmt: skip
        if shift == "objectnet":  # ObjectNet-1.0 with the border crop: the testbed only has 1.0-beta
            assert fits == [] and m["effective_robustness"] is None
            continue
        (fit,) = fits
        assert fit["n"] >= 3 and not any(b.startswith("run:") for b in fit["baseline_models"])
        # clip half an example from 0 and 1, then ER = y - logit^-1(slope * logit(x) + intercept)
        x = min(max(m["id_acc"], 0.5 / m["id_n"]), 1 - 0.5 / m["id_n"])
        trend = 1 / (1 + np.exp(-(fit["slope"] * logit(x) + fit["intercept"])))
        assert m["effective_robustness"] == pytest.approx(m["ood_acc"] - trend, abs=1e-9)


def test_report_pairs_the_113_way_head_with_its_weights_imagenet_accuracy(journey):
    summary = json.loads((journey.root / "report" / "summary.json").read_text())
    (names,) = [m for m in summary["models"] if m["model"] == NAMES_HEAD]
    rows = rows_of(journey.run)
    (inet,) = [r for r in rows if r["model"] == "clip:journey-clip" and r["setting"] == "imagenet"]
    (on,) = [r for r in rows if r["model"] == NAMES_HEAD]
    assert (names["shift"], names["x_setting"]) == ("objectnet-names", "imagenet")  # the engine's own name
    assert (names["id_acc"], names["ood_acc"]) == (inet["metrics"]["top1"], on["metrics"]["top1"])
    assert names["protocol"]["head"] == "objectnet-113-names"  # never in a table with the max projection
    assert names["effective_robustness"] is None
    assert not any(NAMES_HEAD in u for u in summary["unpaired"])


def test_report_tags_wiseft_cells_by_what_they_are(journey):
    summary = json.loads((journey.root / "report" / "summary.json").read_text())
    tags = {m["model"]: m["tags"] for m in summary["models"] if m["source"] == "run:wiseft"}
    at = {a: wiseft_at(journey.wiseft, a) for a in ("0", "0.5", "1")}
    assert "clip-zero-shot" in tags[at["0"]] and "fine-tuned" not in tags[at["0"]]
    assert {"wise-ft", "wiseft"} <= set(tags[at["0.5"]]) and "clip-zero-shot" not in tags[at["0.5"]]
    assert "fine-tuned" in tags[at["1"]]


def test_report_pdf_opens_and_names_the_highlighted_model(journey):
    from pypdf import PdfReader

    reader = PdfReader(journey.root / "report" / "report.pdf")
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) == json.loads((journey.root / "report" / "summary.json").read_text())["pages"]
    assert "clip:journey-clip" in text and "wiseft:journey-clip[zs" in text and "(alpha=0.5)" in text


# -- 5. submit, validate, leaderboard ------------------------------------------------------------


def test_leaderboard_entry_shows_the_runs_accuracies(journey):
    rows = by_setting(journey.run, "clip:journey-clip")
    assert journey.logs["validate"].endswith(f": OK: clip:journey-clip, 9 settings recomputed; keys and labels checked against {journey.data}\n")
    site = journey.root / "site"
    (validation,) = (site / ".validation").glob("*.json")
    scores = json.loads(validation.read_text())["scores"]
    assert scores == {s: [r["metrics"]["top1"], r["n"]] for s, r in rows.items()}
    table = [line for line in (site / "leaderboard.md").read_text().splitlines() if "Tiny CLIP zero-shot" in line]
    (line,) = table
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[-6:] == [f"{100 * rows[s]['metrics']['top1']:.2f}" for s in ("imagenet", "imagenetv2", "imagenet-r",
                                                                               "imagenet-sketch", "imagenet-a", "objectnet")]  # fmt: skip
    (entry,) = (site / "entries").glob("*.html")
    html = entry.read_text()
    for shift in OOD_SHIFTS:
        ood, ref = rows[shift], rows[ID_OF[shift]]
        cells = (f'<td class="t">{shift}</td><td class="t">{ID_OF[shift]}</td><td>{100 * ref["metrics"]["top1"]:.2f}</td>'
                 f'<td>{ref["n"]:,}</td><td>{100 * ood["metrics"]["top1"]:.2f}</td><td>{ood["n"]:,}</td>')  # fmt: skip
        assert cells in html
    # Report and leaderboard place the model against the same testbed trend: same ER (in pp).
    summary = json.loads((journey.root / "report" / "summary.json").read_text())
    er = {m["shift"]: m["effective_robustness"] for m in summary["models"] if m["source"] == "run:clip"}
    for shift in ("imagenetv2", "imagenet-r", "imagenet-sketch", "imagenet-a"):
        assert f'<td>{100 * er[shift]:.2f} <span class="ci">' in html.split(f'<td class="t">{shift}</td>')[1]


def test_the_bundle_fails_against_the_published_sizes(journey, monkeypatch):
    for name, cls in shift_classes().items():
        monkeypatch.setattr(cls, "spec", journey.published[name])
    status, out, _ = cli("validate", journey.root / "submissions" / "tiny.tar.gz", "--data-root", journey.data)
    assert status == 1
    assert ": [count-mismatch] imagenet-sketch: manifest expects 1,000 examples but the shift has 50,889\n" in out
    assert ": [count-mismatch] objectnet: manifest expects 113 examples but the shift has 18,574\n" in out
