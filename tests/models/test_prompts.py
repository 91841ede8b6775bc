import json

import pytest

from models.prompts import load_classnames, load_templates


def test_openai_imagenet_names_and_templates_keep_order_and_duplicates():
    space, names = load_classnames("imagenet-1k")
    assert space == "imagenet-1k" and len(names) == 1000
    assert names[0] == "tench" and names.count("missile") == 2 and names.count("sunglasses") == 2
    _, templates = load_templates("openai-imagenet-80")
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    assert load_templates("simple-imagenet-7")[1][0] == "itap of a {}."
    assert len(load_templates("fmow-16")[1]) == 16 and load_templates("iwildcam-2")[1] == ["a photo of {}.", "{} in the wild."]


def test_template_and_name_files(tmp_path):
    # CLIP_benchmark's webdataset layout: classnames.txt and a {c} templates file
    (tmp_path / "classnames.txt").write_text("cat\ndog\n\n")
    (tmp_path / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n{c}, drawn.\n")
    ident, names = load_classnames(str(tmp_path / "classnames.txt"))
    assert names == ["cat", "dog"] and ident.startswith("file:classnames.txt:")
    assert load_templates(str(tmp_path / "zeroshot_classification_templates.txt"))[1] == ["a photo of a {}.", "{}, drawn."]
    (tmp_path / "bad.txt").write_text("no placeholder here\n")
    with pytest.raises(ValueError, match="exactly once"):
        load_templates(str(tmp_path / "bad.txt"))
    with pytest.raises(FileNotFoundError, match="neither a known set"):
        load_templates("openai-imagenet-81")


def _objectnet_mappings(tmp_path, folder_to_label):
    m = tmp_path / "mappings"
    m.mkdir()
    (m / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label))
    (m / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Bottle": "water bottle; beer bottle", "Can opener": "can opener", "Band Aid": "Band Aid"}))
    return m


def test_objectnet_names_follow_folder_order_and_drop_non_overlapping_classes(tmp_path):
    m = _objectnet_mappings(tmp_path, {"water_bottle": "Bottle", "can_opener": "Can opener",
                                       "band_aid": "Band Aid", "chair": "Chair"})
    ident, names = load_classnames(f"objectnet:{m}")
    # sorted by folder (band_aid, can_opener, water_bottle), not by label (Band Aid, Bottle, Can opener)
    assert names == ["band aid", "can opener", "bottle"] and ident.startswith("objectnet-3:")


def test_objectnet_inconsistent_mappings_are_an_error(tmp_path):
    m = _objectnet_mappings(tmp_path, {"water_bottle": "Bottle", "band_aid": "Band Aid"})
    with pytest.raises(ValueError, match="disagree.*Can opener"):
        load_classnames(f"objectnet:{m}")
    with pytest.raises(FileNotFoundError, match="mapping file not found"):
        load_classnames(f"objectnet:{tmp_path}")
