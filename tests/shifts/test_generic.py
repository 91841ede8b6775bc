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
    _shard(tmp_path / "test", [("s0000000.jpg", fixtures.image_bytes((1, 1, 1)))])
    with pytest.raises(ValueError, match="0.tar sample 's0000000': no 'cls' label"):
        list(get_shift("wds").examples(tmp_path))


def _shard(split, members):
    import io
    import tarfile

    split.mkdir(parents=True)
    (split / "nshards.txt").write_text("1\n")
    with tarfile.open(split / "0.tar", "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_two_samples_under_one_key_are_refused_not_merged(tmp_path):
    """Consecutive samples sharing a key were merged into one: a sample lost, a label taken from
    the other, and the count one short with nothing said (a user shard has no published size)."""
    members = []
    for key, label in [("s0", 0), ("s1", 1), ("s1", 0), ("s2", 1)]:
        members += [(f"{key}.jpg", fixtures.image_bytes((100 * label, 0, 0))), (f"{key}.cls", str(label).encode())]
    _shard(tmp_path / "test", members)
    (tmp_path / "classnames.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"0.tar: member 's1.jpg' repeats key 's1' with .jpg already read"):
        get_shift("wds").keys_and_labels(tmp_path)


@pytest.mark.parametrize(
    "folder, error",
    [
        # sorted before every class: read as class 0, it moved every label by one
        (".ipynb_checkpoints", r"\.ipynb_checkpoints: a hidden folder next to the class folders"),
        # took a label and a class name in the zero-shot head, with no image (ImageFolder refuses it)
        ("zebra", r"zebra: class folder with no images \(1 such\)"),
    ],
)
def test_a_hidden_or_empty_folder_is_not_read_as_a_class(tmp_path, folder, error):
    fixtures.write_folder(tmp_path, per_class=1)
    (tmp_path / folder).mkdir()
    with pytest.raises(ValueError, match=error):
        get_shift("folder").spec_for(tmp_path)


def test_macos_resource_forks_in_a_class_folder_are_named_with_the_fix(tmp_path):
    """``._img_0.png`` has an image suffix: it was counted as an image and failed to decode."""
    fixtures.write_folder(tmp_path, per_class=1)
    (tmp_path / "Cat" / "._img_0.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble header
    with pytest.raises(ValueError, match=r"Cat/\._img_0\.png: hidden file in a folder dataset .* class folder "
                                         r"\(1 here; '\._' files are macOS resource forks"):
        get_shift("folder").keys_and_labels(tmp_path)
