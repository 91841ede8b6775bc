"""ImageNet val, V2, R, A, Sketch and the held-out slice against their authors' conventions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from harness.api import Predictions
from harness.metrics import id_view, score
from shifts import fixtures
from shifts.imagenet import ImageNetHeldout, ImageNetVal, id_view_spec, write_heldout_keys
from shifts.imagenet_shifts import (
    ImageNetA,
    ImageNetR,
    ImageNetSketch,
    ImageNetV2MatchedFrequency,
    ImageNetV2Threshold07,
    ImageNetV2TopImages,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    fixtures.write_imagenet_val(r)
    fixtures.write_imagenetv2(r, "matched-frequency")
    fixtures.write_imagenet_r(r)
    fixtures.write_imagenet_a(r)
    return r


def test_imagenet_val_folders_labels_are_sorted_wnid_index(root):
    got = ImageNetVal().keys_and_labels(root)
    assert len(got) == 1000
    by_key = dict(got)
    # class 0 is the tench n01440764, class 999 the toilet tissue n15075141 (sorted wnids)
    assert [k for k in by_key if k.startswith("n01440764/")] and all(
        by_key[k] == 0 for k in by_key if k.startswith("n01440764/")
    )
    assert all(by_key[k] == 999 for k in by_key if k.startswith("n15075141/"))
    # fixture numbering: image of class c is number c * 7919 % 1000 + 1
    assert (
        by_key[
            "n01443537/ILSVRC2012_val_00007920.JPEG".replace("00007920", f"{7919 % 1000 + 1:08d}")
        ]
        == 1
    )


def test_imagenet_val_flat_layout_same_keys_and_labels(root, tmp_path):
    fixtures.write_imagenet_val(tmp_path, layout="flat")
    flat = ImageNetVal().keys_and_labels(tmp_path)
    assert sorted(flat) == sorted(ImageNetVal().keys_and_labels(root))
    # devkit id of class c is (c*389+17)%1000+1; class 2 (n01484850) -> 796; ground truth line for its image
    gt = (
        (tmp_path / "imagenet/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
        .read_text()
        .split()
    )
    assert gt[2 * 7919 % 1000] == "796"
    assert dict(flat)[f"n01484850/ILSVRC2012_val_{2 * 7919 % 1000 + 1:08d}.JPEG"] == 2


def test_imagenet_val_flat_without_devkit_says_where_it_looked(tmp_path):
    fixtures.write_imagenet_val(tmp_path, layout="flat")
    shutil.rmtree(tmp_path / "imagenet/ILSVRC2012_devkit_t12")
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_validation_ground_truth.txt"):
        ImageNetVal().keys_and_labels(tmp_path)


def test_imagenetv2_folder_10_is_class_10(root):
    got = ImageNetV2MatchedFrequency().keys_and_labels(root)
    assert len(got) == 1000
    for key, label in got:
        assert label == int(key.split("/")[0])
    labels = dict(got)
    k10 = next(k for k in labels if k.startswith("10/"))
    k2 = next(k for k in labels if k.startswith("2/"))
    assert (labels[k10], labels[k2]) == (10, 2)
    assert k10.endswith(".jpeg") and len(k10.split("/")[1]) == 40 + 5


def test_imagenetv2_variants_are_distinct_and_find_their_folders(tmp_path):
    fixtures.write_imagenetv2(tmp_path, "threshold-0.7")
    fixtures.write_imagenetv2(tmp_path, "top-images")
    assert len(ImageNetV2Threshold07().keys_and_labels(tmp_path)) == 1000
    assert len(ImageNetV2TopImages().keys_and_labels(tmp_path)) == 1000
    with pytest.raises(FileNotFoundError, match="ImageNetV2-matched-frequency"):
        ImageNetV2MatchedFrequency().keys_and_labels(tmp_path)
    names = {
        ImageNetV2MatchedFrequency.spec.name,
        ImageNetV2Threshold07.spec.name,
        ImageNetV2TopImages.spec.name,
    }
    assert len(names) == 3


def test_imagenetv2_rejects_wnid_or_missing_folders(tmp_path):
    fixtures.write_imagenetv2(tmp_path)
    base = tmp_path / fixtures.V2_FOLDERS["matched-frequency"]
    shutil.rmtree(base / "999")
    with pytest.raises(ValueError, match="1 of 1000 .*missing.*999"):
        ImageNetV2MatchedFrequency().keys_and_labels(tmp_path)
    (base / "999").mkdir()
    (base / "999" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"999/notes.txt: unexpected file"):
        ImageNetV2MatchedFrequency().keys_and_labels(tmp_path)


@pytest.mark.parametrize(
    "cls, first, last, first_idx",
    [
        (ImageNetR, "n01443537", "n12267677", 1),
        (ImageNetA, "n01498041", "n12267677", 6),
    ],
)
def test_r_and_a_labels_and_class_map(root, cls, first, last, first_idx):
    shift = cls()
    got = shift.keys_and_labels(root)
    assert len(got) == 200
    labels = dict(got)
    assert labels[f"{first}/jpeg_0.jpg"] == 0 and labels[f"{last}/jpeg_0.jpg"] == 199
    cm = shift.spec.class_map
    assert cm.members[0] == (first_idx,) and cm.members[-1] == (988,)  # n12267677 acorn = 988
    assert shift.classnames()[-1] == "acorn"


def test_r_projection_scores_1000_way_logits(root):
    spec = ImageNetR.spec
    keys = np.array(["a", "b"])
    logits = np.zeros((2, 1000), np.float16)
    logits[0, 1] = 3  # goldfish: R class 0
    logits[1, 0] = 9  # tench: not an R class, ignored by the projection
    logits[1, 2] = 2  # great white shark: R class 1
    metrics, _ = score(Predictions("m", "imagenet-r", keys, np.array([0, 1]), logits), spec)
    assert metrics["top1"] == 1.0


def test_id_view_of_val_on_r_classes(root):
    val = ImageNetVal().keys_and_labels(root)
    keys = np.array([k for k, _ in val])
    labels = np.array([y for _, y in val])
    preds = Predictions("m", "imagenet", keys, labels, np.zeros((len(keys), 1000), np.float16))
    spec = id_view_spec(ImageNetVal.spec, ImageNetR.spec)
    view = id_view(preds, spec.class_map, spec.name)
    assert spec.name == "imagenet@imagenet-r" and spec.expected_size == 10_000
    assert len(view) == 200 and set(view.labels) == set(range(200))
    goldfish = next(i for i, k in enumerate(view.keys) if k.startswith("n01443537/"))
    assert view.labels[goldfish] == 0


def test_sketch_reads_1000_wnid_folders(tmp_path):
    fixtures.write_imagenet_sketch(tmp_path)
    got = ImageNetSketch().keys_and_labels(tmp_path)
    assert len(got) == 1000 and dict(got)["n01440764/sketch_0.JPEG"] == 0
    assert ImageNetSketch.spec.expected_size == 50_889


def test_stray_top_level_file_is_an_error_but_readme_is_not(tmp_path):
    fixtures.write_imagenet_r(tmp_path)
    ImageNetR().keys_and_labels(tmp_path)  # README.txt is the authors' own file
    (tmp_path / "imagenet-r" / "list.csv").write_text("x")
    with pytest.raises(ValueError, match=r"imagenet-r/list.csv: unexpected file"):
        ImageNetR().keys_and_labels(tmp_path)


def test_heldout_seeded_draw_is_saved_and_reproducible(tmp_path):
    fixtures.write_imagenet_train(tmp_path, per_class=3)
    path = write_heldout_keys(tmp_path, per_class=2, seed=0)
    first = path.read_text()
    assert write_heldout_keys(tmp_path, per_class=2, seed=0).read_text() == first
    got = ImageNetHeldout().keys_and_labels(tmp_path)
    assert len(got) == 2000 and [k for k, _ in got] == first.split()
    assert all(y == 0 for k, y in got if k.startswith("n01440764/"))


def test_heldout_model_soups_mask(tmp_path):
    fixtures.write_imagenet_train(tmp_path, per_class=2)
    mask = np.zeros(2000, np.int64)
    mask[[1, 2, 1999]] = (
        1  # ImageFolder order: class 0 files _1, _14; class 1 file _1; ... class 999 _14
    )
    np.save(tmp_path / "imagenet" / "imagenet_98_idxs.npy", mask)
    got = ImageNetHeldout().keys_and_labels(tmp_path)
    assert got == [
        ("n01440764/n01440764_14.JPEG", 0),
        ("n01443537/n01443537_1.JPEG", 1),
        ("n15075141/n15075141_14.JPEG", 999),
    ]
    np.save(tmp_path / "imagenet" / "imagenet_98_idxs.npy", mask[:-1])
    with pytest.raises(ValueError, match="1999 entries but"):
        ImageNetHeldout().keys_and_labels(tmp_path)


def test_heldout_spec_is_sized_by_its_list(tmp_path):
    fixtures.write_imagenet_heldout(tmp_path, per_class=2)
    assert ImageNetHeldout().spec_for(tmp_path).expected_size == 1000


def test_parts_split_the_examples_exactly_once(root, tmp_path):
    from shifts.pack import pack

    shift = ImageNetR()
    whole = [e.key for e in shift.examples(root)]
    parts = [[e.key for e in shift.examples(root, part=(i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole) and all(parts)
    out = tmp_path / "wds" / "imagenet-r"
    pack(shift, root, out, maxcount=70, progress=False)  # 3 shards
    shard_parts = [
        [e.key for e in shift.examples(tmp_path, form="wds", part=(i, 2))] for i in range(2)
    ]
    assert len(shard_parts[0]) == 70 + 60 and len(shard_parts[1]) == 70  # shards 0, 2 | 1
    with pytest.raises(ValueError, match="part must be"):
        list(shift.examples(root, part=(3, 3)))


def test_empty_val_folder_is_named(tmp_path):
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match="val is empty"):
        ImageNetVal().keys_and_labels(tmp_path)


def test_imagenet_val_kaggle_layout_same_keys_and_labels(root, tmp_path):
    fixtures.write_imagenet_val(tmp_path, layout="kaggle")
    assert sorted(ImageNetVal().keys_and_labels(tmp_path)) == sorted(
        ImageNetVal().keys_and_labels(root)
    )
    sol = tmp_path / "imagenet" / "LOC_val_solution.csv"
    sol.write_text(sol.read_text().replace("n01443537 1 2", "n99999999 1 2", 1))
    with pytest.raises(ValueError, match="LOC_val_solution.csv row .*n99999999"):
        ImageNetVal().keys_and_labels(tmp_path)


def _sort_into_folders(val, folder_of):
    """Move flat ``ILSVRC2012_val_*.JPEG`` files into ``folder_of(number)`` sub-folders, as a
    user's preparation script does (this one renaming them ``.jpg``)."""
    for path in sorted(val.iterdir()):
        number = int(path.stem.rpartition("_")[2])
        (val / folder_of(number)).mkdir(exist_ok=True)
        path.rename(val / folder_of(number) / path.with_suffix(".jpg").name)


@pytest.mark.parametrize("layout", ["flat", "kaggle"])
def test_val_folders_sorted_by_another_label_order_are_refused(root, tmp_path, layout):
    """The classic preparation mistake: devkit class ids read as sorted-wnid indices. Every folder
    still holds its 50 images (here 1), so the counts pass, and nearly every label was wrong."""
    from shifts.imagenet_meta import imagenet_wnids

    written = dict((int(k[-13:-5]), k.partition("/")[0]) for k, _ in fixtures.write_imagenet_val(tmp_path, layout=layout))
    if layout == "flat":  # the mistake: the devkit id in the ground truth used as a sorted-wnid index
        val = tmp_path / "imagenet" / "val"
        source = tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
        ids = [int(x) for x in source.read_text().split()]
        _sort_into_folders(val, lambda n: imagenet_wnids()[ids[n - 1] - 1])
    else:  # the solution's wnids shifted by one class
        val = tmp_path / "imagenet" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
        source = tmp_path / "imagenet" / "LOC_val_solution.csv"
        _sort_into_folders(val, lambda n: imagenet_wnids()[(imagenet_wnids().index(written[n]) + 1) % 1000])
    with pytest.raises(ValueError, match=rf"in folder n\d+, but .*{source.name} labels it n\d+ \(\d+ of 1000 images "
                                         r"sit in another class's folder\); the folders were sorted by another label order"):
        ImageNetVal().keys_and_labels(tmp_path)


def test_val_folders_sorted_by_the_ground_truth_read_as_before(root, tmp_path):
    written = dict((int(k[-13:-5]), k.partition("/")[0]) for k, _ in fixtures.write_imagenet_val(tmp_path, layout="flat"))
    _sort_into_folders(tmp_path / "imagenet" / "val", lambda n: written[n])
    labels = {k.replace(".jpg", ".JPEG"): y for k, y in ImageNetVal().keys_and_labels(tmp_path)}
    assert labels == dict(ImageNetVal().keys_and_labels(root))
    (tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()  # nothing to check with
    assert len(ImageNetVal().keys_and_labels(tmp_path)) == 1000
