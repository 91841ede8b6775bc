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
from journey import IMAGENET_SHIFTS, build, cli, fixture_sizes, run_all  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIFTBENCH_CACHE", str(root / "cache"))
        j = build(root)
        # With the published sizes (50,000 ImageNet images...), the fixture is incomplete: refused.
        j.refused = cli("run", "--model", "fake:x", "--shifts", "imagenet-r", "--run-dir", root / "runs" / "refused",
                        *j.common())  # fmt: skip
        with fixture_sizes(j.data) as sizes:
            j.sizes = sizes
            run_all(j)
            yield j


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def by_setting(run_dir: Path, model: str) -> dict[str, dict]:
    return {r["setting"]: r for r in rows_of(run_dir) if r["model"] == model}


def load_predictions(run_dir: Path, model: str, shift: str) -> dict[str, np.ndarray]:
    from harness.store import RunDir

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
        f"shiftbench run: error: shift 'imagenet' under {journey.data}: 1000 examples in split 'test', expected 50000; "
        "the data is incomplete or not the expected version (see `shiftbench check-data`), or pass --allow-incomplete "
        "to score what is there (recorded as n < n_expected)"
    )
    assert not (journey.root / "runs" / "refused" / "results.jsonl").exists()


def test_run_pairs_every_ood_shift_with_its_id_view_and_scores_as_the_datasets_define(journey):
    rows = by_setting(journey.run, "clip:tiny-clip")
    assert sorted(rows) == sorted([*IMAGENET_SHIFTS, "imagenet@imagenet-r", "imagenet@imagenet-a", "imagenet@objectnet"])
    want = expected_top1(journey.data, journey.run, "clip:tiny-clip")
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
    rows = by_setting(journey.run, "clip:tiny-clip")
    assert rows["objectnet"]["class_map"] == rows["imagenet@objectnet"]["class_map"] == from_files.digest()
    # The fixture's mapping files list labels in reverse and give 12 classes two ImageNet ids:
    # the scores above used exactly those 125 ids (a many-to-one map, max over each class's ids).
    assert sum(len(m) == 2 for m in members) == 12
    assert rows["objectnet"]["protocol"]["crop"] == "border 2px per side"


def test_a_wilds_shift_runs_with_its_own_metrics(journey):
    from shifts.fixtures import IWILDCAM_ROWS

    (row,) = rows_of(journey.wilds)
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
    before = rows_of(journey.run)
    assert journey.logs["score"] == "" or "clip:tiny-clip" in journey.logs["score"]
    events = [json.loads(line) for line in journey.logs["rerun"].splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "model_skipped" in kinds and not {"cell_start", "cell_predicted", "scored"} & set(kinds)
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert {r["status"] for r in summary["rows"]} == {"skipped"} and len(summary["rows"]) == 9
    assert rows_of(journey.run) == before
    first = [json.loads(line) for line in journey.logs["run"].splitlines() if line.startswith("{")]
    # ImageNet was predicted once although three ID views and three OOD shifts use it.
    assert sorted(e["shift"] for e in first if e["event"] == "cell_predicted") == sorted(IMAGENET_SHIFTS)


# -- 3. WiSE-FT and greedy soup ------------------------------------------------------------------


def test_wiseft_endpoints_equal_the_zero_shot_and_fine_tuned_models(journey):
    rows = rows_of(journey.wiseft)
    assert sorted({r["model"] for r in rows}) == ["wiseft(alpha=0)", "wiseft(alpha=0.5)", "wiseft(alpha=1)"]
    for shift in ("imagenet", "imagenet-r"):
        zs = load_predictions(journey.run, "clip:tiny-clip", shift)
        ft = load_predictions(journey.finetuned, "finetuned:tiny-clip", shift)
        at = {a: load_predictions(journey.wiseft, f"wiseft(alpha={a})", shift) for a in ("0", "0.5", "1")}
        assert all(np.array_equal(p["keys"], zs["keys"]) for p in (ft, *at.values()))
        assert np.array_equal(at["0"]["logits"], zs["logits"])
        assert np.array_equal(at["1"]["logits"], ft["logits"])
        assert not np.array_equal(at["0.5"]["logits"], zs["logits"])
        assert not np.array_equal(at["0.5"]["logits"], ft["logits"])
    zs_rows, ft_rows = by_setting(journey.run, "clip:tiny-clip"), by_setting(journey.finetuned, "finetuned:tiny-clip")
    for setting in ("imagenet", "imagenet@imagenet-r", "imagenet-r"):
        assert by_setting(journey.wiseft, "wiseft(alpha=0)")[setting]["metrics"] == zs_rows[setting]["metrics"]
        assert by_setting(journey.wiseft, "wiseft(alpha=1)")[setting]["metrics"] == ft_rows[setting]["metrics"]
    half = by_setting(journey.wiseft, "wiseft(alpha=0.5)")["imagenet-r"]["provenance"]["model"]
    assert (half["alpha"], half["zeroshot"], half["finetuned"]) == (0.5, "clip:tiny-clip", "finetuned:tiny-clip")


def test_greedy_soup_decisions_follow_the_held_out_scores(journey):
    record = json.loads((journey.soup / "soups" / "greedy.json").read_text())
    rows = rows_of(journey.soup)
    held = {r["model"]: r["metrics"]["top1"] for r in rows if r["setting"] == "imagenet-heldout"}
    # Selection ran on held-out ImageNet train only: no ingredient or candidate has a reported shift.
    reported = {r["model"] for r in rows if r["setting"] != "imagenet-heldout"}
    assert reported == {"soup(greedy)"}
    assert "soup(greedy)" not in held
    singles = {n: held[f"ingredient({n})"] for n in ("ft0", "ft1", "ft2")}
    assert record["heldout"] == "imagenet-heldout" and record["individual_scores"] == singles
    assert record["order"] == sorted(singles, key=lambda n: -singles[n])  # stable on ties
    kept, best = [record["order"][0]], singles[record["order"][0]]
    assert record["steps"][0] == {"ingredient": kept[0], "heldout_score": best, "accepted": True, "best_so_far": best}
    for step, name in zip(record["steps"][1:], record["order"][1:], strict=True):
        score = held[f"candidate({'+'.join([*kept, name])})"]
        accepted = score > best  # strict improvement only
        if accepted:
            kept, best = [*kept, name], score
        assert step == {"ingredient": name, "heldout_score": score, "accepted": accepted, "best_so_far": best}
    assert record["accepted"] == kept and record["final_score"] == best
    # The ingredients were built for this (journey.write_checkpoints): the two half-heads each get
    # about half of the held-out set, their soup nearly all of it; the noisy head is rejected.
    assert record["order"] == ["ft0", "ft1", "ft2"] and kept == ["ft0", "ft1"]
    assert best > max(singles.values())
    soup = by_setting(journey.soup, "soup(greedy)")
    assert sorted(soup) == ["imagenet", "imagenet-r", "imagenet@imagenet-r"]
    assert [Path(p).stem for p in soup["imagenet-r"]["provenance"]["model"]["ingredients"]] == kept


def test_greedy_soup_refuses_to_select_on_a_reported_shift(journey):
    status, _, err = cli("soup", "--model", "finetuned:tiny-clip", *journey.clip_args(), "--model-arg",
                         f"weights={journey.ckpt['ft']}", "--ingredients", journey.ckpt["ingredients"], "--recipe",
                         "greedy", "--held-out", "imagenet", "--shifts", "imagenet-r", "--run-dir",
                         journey.root / "runs" / "bad-soup", *journey.common())  # fmt: skip
    assert status == 2 and "--held-out imagenet is also reported" in err
    assert not (journey.root / "runs" / "bad-soup").exists()
