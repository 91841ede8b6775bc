"""User datasets: ImageFolder order and CLIP_benchmark shards read as they are."""

from __future__ import annotations

import pytest

from harness.registry import get_shift
from shifts import fixtures, wds


def test_folder_labels_follow_text_sorted_names(tmp_path):
    fixtures.write_folder(tmp_path, per_class=1)
    shift = get_shift("folder")
    got = dict(shift.keys_and_labels(tmp_path))
    # ImageFolder order: "10" < "2" < "Cat" < "dog" (text sort, upper case first)
    assert got == {"10/img_0.png": 0, "2/img_0.png": 1, "Cat/img_0.png": 2, "dog/img_0.png": 3}
    spec = shift.spec_for(tmp_path)
    assert (spec.num_classes, spec.expected_size) == (
        4,
        4,
    ) and spec.label_space == f"folder:{tmp_path.name}"
    assert shift.classnames(tmp_path) == ["10", "2", "Cat", "dog"]


def test_clip_benchmark_style_shards_with_plain_keys(tmp_path):
    """Shards as CLIP_benchmark writes them: keys s0000000..., webp images, cls labels."""
    img = fixtures.image_bytes((10, 20, 30), "WEBP")
    samples = [wds.ShardSample(f"s{i:07d}", i % 2, img, "webp") for i in range(5)]
    wds.write_split(tmp_path, "test", samples, ["cat", "dog"], ["a photo of a {c}."], maxcount=2)
    shift = get_shift("wds")
    exs = list(shift.examples(tmp_path))
    assert [(e.key, e.label) for e in exs] == [(f"s{i:07d}", i % 2) for i in range(5)]
    assert exs[0].image.size == (16, 16)
    spec = shift.spec_for(tmp_path)
    assert spec.num_classes == 2 and spec.expected_size == 5
    assert shift.templates_for(tmp_path) == ["a photo of a {c}."]


def test_shard_without_label_is_named(tmp_path):
    import io
    import tarfile

    split = tmp_path / "test"
    split.mkdir()
    (split / "nshards.txt").write_text("1\n")
    with tarfile.open(split / "0.tar", "w") as tf:
        data = fixtures.image_bytes((1, 1, 1))
        info = tarfile.TarInfo("s0000000.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="0.tar sample 's0000000': no 'cls' label"):
        list(get_shift("wds").examples(tmp_path))
