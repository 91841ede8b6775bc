"""``atomic_file`` and ``atomic_folder``: a write that fails leaves the old file or folder, no
temp file or folder, and none of the folders it made for the new one."""

from __future__ import annotations

import pytest

from harness.files import atomic_file, atomic_folder


def test_a_failed_file_write_leaves_nothing_it_made(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.txt").write_text("old")
    for path in (tmp_path / "new" / "deeper" / "out.txt", tmp_path / "keep" / "old.txt"):
        with pytest.raises(RuntimeError):
            with atomic_file(path, "w") as fh:
                fh.write("half")
                raise RuntimeError("the writer failed")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["keep", "keep/old.txt"]
    assert (tmp_path / "keep" / "old.txt").read_text() == "old"


def test_a_failed_folder_build_leaves_nothing_it_made(tmp_path):
    site = tmp_path / "new" / "site"
    with pytest.raises(RuntimeError):
        with atomic_folder(site) as building:
            (building / "index.html").write_text("half")
            raise RuntimeError("the builder failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(site) as building:
        (building / "index.html").write_text("whole")
    assert (site / "index.html").read_text() == "whole"
