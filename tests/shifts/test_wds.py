"""The shard reader's tar parsing agrees with tarfile, and refuses damaged archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from shifts.wds import tar_members


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_members_match_tarfile(tmp_path, fmt):
    long_name = "b/" * 60 + "k.cls" if fmt == tarfile.USTAR_FORMAT else "a/" + "x" * 120 + ".jpg"
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=fmt) as tf:
        for i, name in enumerate([long_name, "k/s0000001.cls", "s0000000.jpg"]):
            data = bytes(range(256)) * (i + 2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("folder")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    with tarfile.open(path) as tf:
        expected = [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]
    assert list(tar_members(path)) == expected and len(expected) == 3


def test_tar_members_refuse_damage(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("s0000000.cls")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"3"))
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"Z" + data[101:])  # a flipped header byte
    with pytest.raises(ValueError, match="checksum mismatch at byte 0"):
        list(tar_members(path))
    path.write_bytes(data[:1024])  # header and data, no end-of-archive
    with pytest.raises(ValueError, match="truncated or corrupt shard"):
        list(tar_members(path))
