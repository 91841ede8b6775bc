"""ObjectNet: classes from the dataset's own mapping files, skipped folders, border crop, protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.api import Predictions
from harness.metrics import score
from shifts import fixtures
from shifts.objectnet import ObjectNet, ObjectNetNames


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("on")
    fixtures.write_objectnet(r)
    return r


def test_labels_follow_sorted_folders_and_skip_non_overlapping(root):
    got = ObjectNet().keys_and_labels(root)
    assert len(got) == 113
    folders = {k.split("/")[0]: y for k, y in got}
    assert folders["c000"] == 0 and folders["c057"] == 57 and folders["c112"] == 112
    assert not {"Bench", "air_freshener", "zz_not_in_imagenet"} & set(folders)


def test_class_map_from_mapping_files(root):
    spec = ObjectNet().spec_for(root)
    cm = spec.class_map
    assert len(cm) == 113 and len(cm.source_indices) == 125
    # fixture: class k collects pytorch index 8k+3, and 8k+7 for the first 12 classes
    assert cm.members[0] == (3, 7) and cm.members[11] == (91, 95) and cm.members[12] == (99,)
    assert cm.members[112] == (899,) and cm.reduce == "max"
    assert ObjectNet.spec.class_map is None  # the plain spec waits for the data's files


def test_classnames_lowercased_in_label_order(root):
    names = ObjectNetNames().classnames(root)
    assert names[0] == "object 000" and names[112] == "object 112"
    with pytest.raises(ValueError, match="mapping files"):
        ObjectNet().classnames()


def test_border_crop_two_pixels_each_side(root):
    ex = next(ObjectNet().examples(root))
    assert ex.image.size == (16, 16)  # 20x20 PNG with a 2 px white border
    px = np.asarray(ex.image)
    assert (px != 255).any(axis=2).all(), "no white border pixel survives the crop"
    assert ObjectNet.spec.protocol["crop"] == "border-2px"


def test_two_protocols_are_distinct_shifts(root):
    a, b = ObjectNet().spec_for(root), ObjectNetNames().spec_for(root)
    assert a.name != b.name and a.protocol["head"] != b.protocol["head"]
    assert b.class_map is None and b.label_space == "objectnet-113"
    keys = np.array(["x", "y"])
    logits = np.zeros((2, 1000), np.float16)
    logits[0, 7] = 5  # second member of class 0: max-pooling gives class 0
    logits[1, 95] = 1  # second member of class 11
    metrics, _ = score(Predictions("m", "objectnet", keys, np.array([0, 11]), logits), a)
    assert metrics["top1"] == 1.0
    with pytest.raises(ValueError, match="113"):
        score(Predictions("m", "objectnet-names", keys, np.array([0, 11]), logits), b)


def test_wrong_mapping_file_is_named(tmp_path):
    fixtures.write_objectnet(tmp_path)
    m = tmp_path / "objectnet-1.0" / "mappings"
    on = json.loads((m / "objectnet_to_imagenet_1k.json").read_text())
    on["Object 003"] = "crane"  # ambiguous: two devkit lines carry this name
    (m / "objectnet_to_imagenet_1k.json").write_text(json.dumps(on))
    with pytest.raises(ValueError, match="'crane'.*matches 2 lines"):
        ObjectNet().keys_and_labels(tmp_path)
    (m / "objectnet_to_imagenet_1k.json").write_text("{not json")
    with pytest.raises(ValueError, match="objectnet_to_imagenet_1k.json: not valid JSON"):
        ObjectNet().keys_and_labels(tmp_path)


def test_missing_overlapping_folder_is_an_error(tmp_path):
    fixtures.write_objectnet(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "objectnet-1.0" / "images" / "c010")
    with pytest.raises(ValueError, match="missing.*c010"):
        ObjectNet().keys_and_labels(tmp_path)


def test_id_view_on_objectnet_classes(root):
    from shifts.imagenet import ImageNetVal, id_view_spec

    spec = id_view_spec(ImageNetVal.spec, ObjectNet().spec_for(root))
    assert (
        spec.name == "imagenet@objectnet"
        and spec.expected_size == 6_250
        and spec.num_classes == 113
    )
    with pytest.raises(ValueError, match="no class map"):
        id_view_spec(ImageNetVal.spec, ObjectNet.spec)


def test_reading_the_data_completes_the_instance_spec(root):
    shift = ObjectNet()
    assert shift.spec.class_map is None
    shift.keys_and_labels(root)
    assert shift.spec.class_map == ObjectNet().spec_for(root).class_map
    assert ObjectNet.spec.class_map is None  # the class attribute is untouched
    logits = np.zeros((1, 1000), np.float16)
    with pytest.raises(ValueError, match=r"no class map from imagenet-1k.*spec_for"):
        score(Predictions("m", "objectnet", np.array(["x"]), np.array([0]), logits), ObjectNet.spec)


def test_shards_without_mappings_are_found_but_incomplete(root, tmp_path):
    import shutil

    from shifts.check import check_shift
    from shifts.pack import pack

    out = tmp_path / "wds" / "objectnet"
    pack(ObjectNet(), root, out, progress=False)
    assert ObjectNet().spec_for(tmp_path).class_map is not None  # mappings were copied
    shutil.rmtree(out / "mappings")
    report = check_shift(ObjectNet(), tmp_path)
    assert report.found and report.form == "wds" and "mappings is missing" in report.problems[0]
    assert [k for k, _ in ObjectNetNames().keys_and_labels(tmp_path)][:1] == [
        "c000/" + next((root / "objectnet-1.0/images/c000").iterdir()).name
    ]


def test_mapping_files_rewritten_with_their_old_times_are_read_again(tmp_path):
    """The mapping was remembered per process by the files' modification times alone."""
    import os

    fixtures.write_objectnet(tmp_path)
    mappings = tmp_path / "objectnet-1.0" / "mappings"
    first = ObjectNet().spec_for(tmp_path).class_map
    path = mappings / "objectnet_to_imagenet_1k.json"
    st = os.stat(path)
    on_to_in = json.loads(path.read_text())
    label, joined = sorted(on_to_in.items())[0]
    on_to_in[label] = joined.split("; ")[0]  # the first class keeps one of its ImageNet classes
    path.write_text(json.dumps(on_to_in))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ObjectNet().spec_for(tmp_path).class_map != first
