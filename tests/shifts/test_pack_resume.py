"""An interrupted ``pack`` resumes after its last finished shard and ends byte for byte where an
uninterrupted pack does; leftovers of another pack are refused, not mixed in."""

from __future__ import annotations

import pytest

from harness.registry import get_shift
from shifts import fixtures
from shifts.images import BadImageError
from shifts.pack import pack

MAXCOUNT = 50  # 200 ImageNet-R images: four shards


def split_files(split_dir):
    return {p.name: p.read_bytes() for p in sorted(split_dir.iterdir())}


@pytest.fixture
def imagenet_r(tmp_path):
    data = tmp_path / "data"
    fixtures.write_imagenet_r(data)
    shift = get_shift("imagenet-r")
    return shift, data, shift.index(data / "imagenet-r", "test")


def test_a_pack_stopped_by_a_bad_file_resumes_after_its_finished_shards(tmp_path, imagenet_r):
    shift, data, records = imagenet_r
    whole = pack(shift, data, tmp_path / "whole", maxcount=MAXCOUNT, progress=False)

    bad = records[120].path  # in the third shard
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(BadImageError, match=f"{bad.name}.*rerun the same pack: it resumes"):
        pack(shift, data, tmp_path / "resumed", maxcount=MAXCOUNT, progress=False)
    split_dir = tmp_path / "resumed" / "test"
    assert sorted(p.name for p in split_dir.iterdir()) == [".pack-source", "0.tar", "1.tar"]  # no temporary shard
    finished = {name: (split_dir / name).stat().st_mtime_ns for name in ("0.tar", "1.tar")}

    bad.write_bytes(good)
    resumed = pack(shift, data, tmp_path / "resumed", maxcount=MAXCOUNT, progress=False)
    assert resumed == whole
    assert {n: (split_dir / n).stat().st_mtime_ns for n in finished} == finished  # not rewritten
    assert split_files(split_dir) == split_files(tmp_path / "whole" / "test")  # no temporary left


def test_leftover_shards_of_another_maxcount_are_refused_and_kept(tmp_path, imagenet_r):
    shift, data, records = imagenet_r
    records[120].path.write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError):
        pack(shift, data, tmp_path / "out", maxcount=MAXCOUNT, progress=False)
    split_dir = tmp_path / "out" / "test"
    before = split_files(split_dir)
    with pytest.raises(ValueError, match=r"0\.tar holds other images.*--maxcount"):
        pack(shift, data, tmp_path / "out", maxcount=MAXCOUNT + 1, progress=False)
    assert split_files(split_dir) == before


def test_a_finished_pack_is_not_packed_again(tmp_path, imagenet_r):
    shift, data, _ = imagenet_r
    pack(shift, data, tmp_path / "out", maxcount=MAXCOUNT, progress=False)
    with pytest.raises(ValueError, match="already holds shards"):
        pack(shift, data, tmp_path / "out", maxcount=MAXCOUNT, progress=False)


def test_a_pack_resumed_from_another_data_root_is_refused(tmp_path, imagenet_r):
    """Shards of another copy of the data with the same file names were kept as this pack's."""
    shift, data, records = imagenet_r
    other = tmp_path / "other"
    fixtures.write_imagenet_r(other)  # same names, a different copy
    records[120].path.write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError):
        pack(shift, data, tmp_path / "out", maxcount=MAXCOUNT, progress=False)
    split_dir = tmp_path / "out" / "test"
    before = split_files(split_dir)
    with pytest.raises(ValueError, match=f"packed from {data.resolve() / 'imagenet-r'}, not {other.resolve() / 'imagenet-r'}"):
        pack(shift, other, tmp_path / "out", maxcount=MAXCOUNT, progress=False)
    assert split_files(split_dir) == before
