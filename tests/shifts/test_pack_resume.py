"""An interrupted ``pack`` resumes after its last finished shard and ends byte for byte where an
uninterrupted pack does; leftovers of another pack are refused, not mixed in."""

from __future__ import annotations

import errno
import shutil

import pytest

from harness.registry import get_shift
from shifts import fixtures, wds
from shifts import pack as pack_module
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


def out_files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def pack_cli(shift: str, data, out, *extra) -> int:
    from harness.cli import main

    return main(["pack", shift, "--data-root", str(data), "--out", str(out), *map(str, extra)])


@pytest.mark.parametrize("failing", ["nshards.txt", "manifest.json", "classnames.txt", "zeroshot_classification_templates.txt"])
def test_a_pack_that_failed_after_its_shards_finishes_when_rerun(tmp_path, imagenet_r, monkeypatch, failing):
    """A full disk while writing what follows the shards: the rerun of the same command finishes
    the pack, byte for byte what an uninterrupted pack writes, without packing the shards again."""
    shift, data, _ = imagenet_r
    pack(shift, data, tmp_path / "whole", maxcount=MAXCOUNT, progress=False)
    real = wds._atomic_write

    def full_disk(path, text):
        if path.name == failing:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(wds, "_atomic_write", full_disk)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"disk full while writing {out}.*{failing}; free space and rerun"):
        pack(shift, data, out, maxcount=MAXCOUNT, progress=False)
    monkeypatch.undo()
    shards = {n: (out / "test" / n).stat().st_mtime_ns for n in ("0.tar", "1.tar", "2.tar", "3.tar")}
    assert pack_cli("imagenet-r", data, out, "--maxcount", MAXCOUNT) == 0
    assert out_files(out) == out_files(tmp_path / "whole")  # no .pack-source left either
    assert {n: (out / "test" / n).stat().st_mtime_ns for n in shards} == shards  # not packed again
    assert pack_cli("imagenet-r", data, out, "--maxcount", MAXCOUNT) == 2  # now finished: not packed over


def test_a_pack_whose_mappings_copy_failed_finishes_when_rerun(tmp_path, monkeypatch):
    """ObjectNet's ``mappings/`` is copied after the shards; a copy that failed part-way is
    finished by rerunning the same command."""
    data = tmp_path / "data"
    fixtures.write_objectnet(data)
    shift = get_shift("objectnet")
    pack(shift, data, tmp_path / "whole", progress=False)
    real = shutil.copytree

    def half_copy(src, dst, **kw):
        dst.mkdir(parents=True, exist_ok=True)
        first = sorted(src.iterdir())[0]
        shutil.copy2(first, dst / first.name)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(pack_module.shutil, "copytree", half_copy)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"disk full while writing {out / 'mappings'}; free space and rerun"):
        pack(shift, data, out, progress=False)
    monkeypatch.setattr(pack_module.shutil, "copytree", real)
    assert pack_cli("objectnet", data, out) == 0
    assert out_files(out) == out_files(tmp_path / "whole")
