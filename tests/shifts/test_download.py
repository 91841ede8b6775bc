"""``shiftbench download`` and ``prepare`` against a real HTTP server on 127.0.0.1, serving archives
built in each published archive's layout (top-level folders as in the real tarballs and zips).

The fixture archives are not the published ones, so each test registers the fixture's own
sha256 and size in the catalogue entry it downloads; every other step (HTTP, Range resume,
verification, extraction, layout, check-data) is the real one. No request leaves 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import local_http  # noqa: E402
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from doubles import tree_state  # noqa: E402

from harness.cli import main  # noqa: E402
from shifts import download as dl  # noqa: E402
from shifts import fixtures, install, sources  # noqa: E402

loopback_only, server = local_http.loopback_only, local_http.server  # fixtures: every test is held to 127.0.0.1


def cli(*args) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def tar_bytes(src: Path, top: str | None, mode: str = "w:gz", dot: bool = False) -> bytes:
    """A tar of ``src``'s contents under ``top/`` (or at the archive's top, ``./``-prefixed with ``dot``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        if top:
            tar.add(src, arcname=top)
        else:
            for child in sorted(src.iterdir()):
                tar.add(child, arcname=("./" if dot else "") + child.name)
    return buf.getvalue()


def zip_bytes(src: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*")):
            name = f"{top}/{p.relative_to(src).as_posix()}"
            if p.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(p, name)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(monkeypatch, shift: str, data: bytes, **changes) -> sources.Archive:
    """The catalogue entry of ``shift`` held to the fixture archive's digest and size."""
    entry = dataclasses.replace(sources.ARCHIVES[shift], **{"sha256": sha(data), "size": len(data), **changes})
    if sources.ARCHIVES[shift].sha256 is None and "sha256" not in changes:
        entry = dataclasses.replace(entry, sha256=None)  # no published checksum: keep it that way
    monkeypatch.setitem(sources.ARCHIVES, shift, entry)
    return entry


def fixture_sizes(monkeypatch, root: Path, names) -> None:
    """Each shift's published size set to what its fixture holds (the layout checks stay)."""
    from harness.registry import get_shift, shifts

    for name in names:
        cls = shifts.get(name)
        n = len(get_shift(name).keys_and_labels(root))
        monkeypatch.setattr(cls, "spec", dataclasses.replace(cls.spec, expected_size=n))
        monkeypatch.setattr(cls, "per_class", None)


# Each downloadable shift: fixture writer, how the published archive is packed, its folder.
LAYOUTS = {
    "imagenetv2": (lambda r: fixtures.write_imagenetv2(r, folder="x"), "w:gz", "imagenetv2-matched-frequency-format-val"),
    "imagenetv2-threshold-0.7": (lambda r: fixtures.write_imagenetv2(r, "threshold-0.7", folder="x"), "w:gz",
                                 "imagenetv2-threshold0.7-format-val"),
    "imagenetv2-top-images": (lambda r: fixtures.write_imagenetv2(r, "top-images", folder="x"), "w:gz",
                              "imagenetv2-top-images-format-val"),
    "imagenet-r": (lambda r: fixtures.write_imagenet_r(r), "w", "imagenet-r"),
    "imagenet-a": (lambda r: fixtures.write_imagenet_a(r), "w", "imagenet-a"),
    "imagenet-sketch": (lambda r: fixtures.write_imagenet_sketch(r), "zip", "sketch"),
    "iwildcam": (lambda r: fixtures.write_iwildcam(r), "w:gz", "iwildcam_v2.0"),
    "fmow": (lambda r: fixtures.write_fmow(r), "w:gz", "fmow_v1.1"),
    "camelyon17": (lambda r: fixtures.write_camelyon17(r), "w:gz", "camelyon17_v1.0"),
}


def build_archive(tmp: Path, shift: str) -> bytes:
    write, mode, folder = LAYOUTS[shift]
    src = tmp / "src"
    write(src)
    made = src / ("x" if shift.startswith("imagenetv2") else folder)
    archive = sources.ARCHIVES[shift]
    if mode == "zip":
        return zip_bytes(made, archive.top)
    return tar_bytes(made, archive.top, mode, dot=shift == "iwildcam")


@pytest.mark.parametrize("shift", sorted(LAYOUTS))
def test_download_lays_out_each_archive_where_its_shift_looks(tmp_path, server, monkeypatch, shift):
    data = build_archive(tmp_path, shift)
    archive = register(monkeypatch, shift, data)
    server.serve(f"/mirror/{archive.filename}", data)
    root = tmp_path / "data"
    # with the published sizes the one-image-per-class fixture is incomplete: said so, status 2
    status, out, err = cli("download", shift, "--data-root", root, "--mirror", server.base + "/mirror", "--no-progress")
    assert status == 2, err
    assert "INCOMPLETE" in out and str(root / archive.target) in out
    assert (root / archive.target).is_dir()
    assert not (root / install.PARTIAL).exists() and not (root / install.DOWNLOADS).exists()
    fixture_sizes(monkeypatch, root, [shift])
    status, out, _ = cli("check-data", shift, "--data-root", root)
    assert status == 0 and "complete" in out and "INCOMPLETE" not in out
    if archive.sha256 is None or sources.ARCHIVES[shift].source.startswith("p-lambda"):
        ledger = (root / install.LEDGER).read_text()
        assert sha(data) in ledger  # no published checksum: the first download's digest is recorded


def test_interrupted_download_resumes_with_a_range_request_and_verifies(tmp_path, server, monkeypatch):
    data = build_archive(tmp_path, "imagenet-r")
    archive = register(monkeypatch, "imagenet-r", data)
    url = server.serve("/m/imagenet-r.tar", data)
    cut = len(data) // 2
    server.drops["/m/imagenet-r.tar"] = cut
    dest = tmp_path / "dl" / archive.filename
    with pytest.raises(dl.DownloadError, match="rerun the same command to resume"):
        dl.fetch(url, dest, archive.sha256, len(data), retries=0, progress=False)
    part = dest.with_name(dest.name + ".part")
    assert part.stat().st_size == cut and not dest.exists()
    digest = dl.fetch(url, dest, archive.sha256, len(data), progress=False)
    assert digest == sha(data) and dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("GET", "/m/imagenet-r.tar", f"bytes={cut}-")


def test_a_connection_dropped_mid_download_is_resumed_within_the_command(tmp_path, server, monkeypatch):
    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    server.serve(f"/m/{archive.filename}", data)
    server.drops[f"/m/{archive.filename}"] = len(data) // 3
    root = tmp_path / "data"
    status, _, err = cli("download", "imagenet-a", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert status == 2 and "connection dropped" in err and "resuming" in err
    ranges = [r for _, _, r in server.requests]
    assert ranges == [None, f"bytes={len(data) // 3}-"]
    assert len(list((root / "imagenet-a").iterdir())) == 201  # 200 wnid folders + README.txt


def test_another_commands_cleanup_of_the_shared_folders_does_not_fail_a_download(tmp_path, server, monkeypatch):
    """Commands installing other shifts into the data root share ``.shiftbench-downloads`` and
    ``.shiftbench-partial``, and remove each once they find it empty. That cleanup, run just after
    this command made each folder, neither fails it nor costs it its verified download."""
    import contextlib

    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "data"
    cleaned = []
    real_write, real_space = Path.write_text, install.check_space

    def write_text(self, *args, **kw):  # the .part.url note is the first file in the downloads folder
        if self.name.endswith(".part.url") and "downloads" not in cleaned:
            cleaned.append("downloads")
            with contextlib.suppress(OSError):
                self.parent.rmdir()
        return real_write(self, *args, **kw)

    def check_space(folder, need):  # the free-space check follows making the staging folder
        if folder.name == install.PARTIAL and "partial" not in cleaned:
            cleaned.append("partial")
            with contextlib.suppress(OSError):
                folder.rmdir()
        return real_space(folder, need)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(install, "check_space", check_space)
    status, out, err = cli("download", "imagenet-a", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert cleaned == ["downloads", "partial"]
    assert status == 2 and "imagenet-a: extracted to" in out and "INCOMPLETE" in out, err  # the fixture's size
    assert sorted(p.name for p in root.iterdir()) == ["imagenet-a"]


def refused(args, watched: Path) -> str:
    """Run the real command line; it must exit 2 and leave everything under ``watched`` exactly as
    it was (no data root, download, staging folder, ledger or note it made). Returns its error."""
    before = tree_state(watched)
    status, _, err = cli(*args)
    assert status == 2, err
    assert tree_state(watched) == before
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("existing_root", [False, True])
def test_a_corrupted_archive_is_refused_naming_both_digests_and_changes_nothing(tmp_path, server, monkeypatch, existing_root):
    data = build_archive(tmp_path, "imagenet-r")
    archive = register(monkeypatch, "imagenet-r", data)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    server.serve(f"/m/{archive.filename}", bytes(bad))
    root = tmp_path / "work" / "data"
    if existing_root:
        root.mkdir(parents=True)
    err = refused(["download", "imagenet-r", "--data-root", root, "--mirror", server.base + "/m", "--no-progress"],
                  tmp_path / "work")
    assert sha(data) in err and sha(bytes(bad)) in err and "nothing was extracted" in err and "--archive" in err


def test_a_truncated_download_without_a_published_checksum_is_removed_with_its_extraction(tmp_path, server, monkeypatch):
    """No checksum to stop it first (a WILDS bundle): the damage shows while extracting; the
    downloaded archive, the part extracted and the data root made for them all go."""
    data = build_archive(tmp_path, "camelyon17")
    short = data[: len(data) * 2 // 3]
    archive = register(monkeypatch, "camelyon17", short)
    assert archive.sha256 is None
    server.serve(f"/m/{archive.filename}", short)
    err = refused(["download", "camelyon17", "--data-root", tmp_path / "work" / "data", "--mirror", server.base + "/m",
                   "--no-progress"], tmp_path / "work")  # fmt: skip
    assert "damaged" in err and archive.filename in err


def test_a_hostile_archive_that_passed_its_checksum_is_not_kept(tmp_path, server, monkeypatch):
    data = hostile_tar("symlink")
    archive = register(monkeypatch, "imagenet-r", data)
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "data"
    root.mkdir()
    err = refused(["download", "imagenet-r", "--data-root", root, "--mirror", server.base + "/m", "--no-progress"], root)
    assert "'imagenet-r/link'" in err and "refused" in err


def test_an_extraction_interrupted_by_the_user_keeps_the_verified_download_for_the_rerun(tmp_path, server, monkeypatch):
    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "data"
    real = install.safe_extract

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(install, "safe_extract", interrupted)
    status, _, err = cli("download", "imagenet-a", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert status == 130 and "rerun to resume" in err
    assert (root / install.DOWNLOADS / archive.filename).read_bytes() == data
    assert not (root / "imagenet-a").exists() and not (root / install.PARTIAL).exists()
    monkeypatch.setattr(install, "safe_extract", real)
    status, _, err = cli("download", "imagenet-a", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert "using the copy downloaded before" in err and len(server.requests) == 1  # not fetched again
    assert (root / "imagenet-a").is_dir() and not (root / install.DOWNLOADS).exists()


def test_every_shift_of_a_download_is_checked_before_the_first_is_fetched(tmp_path, server, monkeypatch):
    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "data"
    (root / "imagenet-r" / "junk").mkdir(parents=True)  # imagenet-r's folder is taken
    err = refused(["download", "imagenet-a", "imagenet-r", "--data-root", root, "--mirror", server.base + "/m",
                   "--no-progress"], root)  # fmt: skip
    assert f"{root / 'imagenet-r'} already exists" in err and "move it aside and rerun" in err
    assert server.requests == []


def test_download_refuses_a_data_root_that_is_a_file_or_a_missing_archive(tmp_path):
    afile = tmp_path / "data.txt"
    afile.write_text("not a folder")
    err = refused(["download", "imagenet-r", "--data-root", afile, "--archive", afile], tmp_path)
    assert err.endswith(f"--data-root {afile} exists and is not a folder; give a folder path")
    err = refused(["prepare", "objectnet", "--zip", afile, "--data-root", afile / "data"], tmp_path)
    assert err.endswith(f"--data-root {afile / 'data'}: {afile} is a file, not a folder; give another path")
    err = refused(["download", "imagenet-r", "--data-root", tmp_path / "new", "--archive", tmp_path / "imagenet-r.tar"],
                  tmp_path)  # fmt: skip
    assert err.endswith(f"--archive {tmp_path / 'imagenet-r.tar'}: no such file; give the path of the archive you fetched")


def hostile_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("imagenet-r/n01443537/fine.jpg")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        if kind == "traversal":
            bad = tarfile.TarInfo("imagenet-r/../../escaped.txt")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "absolute":
            bad = tarfile.TarInfo("/tmp/escaped.txt")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        else:
            bad = tarfile.TarInfo("imagenet-r/link")
            bad.type = tarfile.SYMTYPE
            bad.linkname = "/etc/passwd"
            tar.addfile(bad)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink"])
def test_a_hostile_member_is_refused_and_nothing_is_installed(tmp_path, server, monkeypatch, kind):
    data = hostile_tar(kind)
    archive = register(monkeypatch, "imagenet-r", data)
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "work" / "data"
    status, _, err = cli("download", "imagenet-r", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert status == 2 and "refused" in err
    assert not (root / "imagenet-r").exists() and not (root / install.PARTIAL).exists()
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.parametrize("mode", ["w", "w:gz"])
@pytest.mark.parametrize("damage", ["cut between members", "damaged header"])
def test_a_tar_that_tarfile_would_end_quietly_is_refused_as_damaged(tmp_path, mode, damage):
    """``tarfile`` reads a tar cut between two members, or with a damaged header, as a shorter
    valid archive; the missing end-of-archive block gives it away, compressed or not."""
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(6):
            member = tarfile.TarInfo(f"imagenet-r/n01443537/{i}.jpg")
            member.size = 5000
            tar.addfile(member, io.BytesIO(bytes([i]) * 5000))
    data = bytearray(buf.getvalue())
    third = 2 * (512 + 5120)  # where the third member's header starts
    if damage == "cut between members":
        del data[third:]
    else:
        data[third + 148 : third + 156] = b"garbage!"  # its header checksum
    archive = tmp_path / "imagenet-r.tar"
    archive.write_bytes(gzip.compress(bytes(data)) if mode == "w:gz" else bytes(data))
    with pytest.raises(dl.DownloadError, match=r"damaged \(after 2 files it ends, or has a damaged header.*fetch it again"):
        dl.safe_extract(archive, tmp_path / "out", progress=False)


def test_a_zip_traversal_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("sketch/n01443537/a.JPEG", b"abc")
        zf.writestr("sketch/../../escaped.txt", b"evil")
    archive = tmp_path / "ImageNet-Sketch.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(dl.DownloadError, match="path traversal"):
        dl.safe_extract(archive, tmp_path / "out", progress=False)
    assert not list(tmp_path.rglob("escaped.txt")) and not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("fault, message", [("404", "HTTP 404"), ("html", "web page (HTML)")])
def test_a_missing_file_or_a_web_page_is_a_clear_error(tmp_path, server, monkeypatch, fault, message):
    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    server.serve(f"/m/{archive.filename}", data)
    server.faults[f"/m/{archive.filename}"] = fault
    err = refused(["download", "imagenet-a", "--data-root", tmp_path / "work" / "data", "--mirror", server.base + "/m",
                   "--no-progress"], tmp_path / "work")  # no data root, download folder or note left  # fmt: skip
    assert message in err and "--archive" in err


def test_a_full_disk_is_a_clear_error_before_and_during_the_download(tmp_path, server, monkeypatch):
    import collections
    import errno

    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    url = server.serve(f"/m/{archive.filename}", data)
    usage = collections.namedtuple("usage", "total used free")
    with monkeypatch.context() as m:  # too little room for the announced size: refused up front
        m.setattr(dl.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
        with pytest.raises(dl.DownloadError, match="free space or choose another --data-root"):
            dl.fetch(url, tmp_path / "dl" / archive.filename, archive.sha256, len(data), progress=False)

    class Full(io.RawIOBase):  # the disk fills up part-way through
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(dl, "open", lambda path, mode: Full(), raising=False)
        with pytest.raises(dl.DownloadError, match="the disk is full.*rerun to resume"):
            dl.fetch(url, tmp_path / "dl2" / archive.filename, archive.sha256, len(data), progress=False)


def test_archive_fetched_elsewhere_is_verified_then_installed(tmp_path, monkeypatch):
    data = build_archive(tmp_path, "imagenet-sketch")
    register(monkeypatch, "imagenet-sketch", data)
    given = tmp_path / "ImageNet-Sketch.zip"
    given.write_bytes(data)
    root = tmp_path / "data"
    other = tmp_path / "other.zip"
    other.write_bytes(data + b"x")
    status, _, err = cli("download", "imagenet-sketch", "--data-root", root, "--archive", other, "--no-progress")
    assert status == 2 and "does not match the published" in err and not (root / "sketch").exists()
    status, out, _ = cli("download", "imagenet-sketch", "--data-root", root, "--archive", given, "--no-progress")
    assert (root / "sketch").is_dir() and given.is_file()  # the user's file is left alone
    assert "imagenet-sketch [test]: folder at" in out


def test_an_unpublished_checksum_is_recorded_then_held_to(tmp_path, server, monkeypatch):
    data = build_archive(tmp_path, "camelyon17")
    archive = register(monkeypatch, "camelyon17", data)
    assert archive.sha256 is None
    server.serve(f"/m/{archive.filename}", data)
    root = tmp_path / "data"
    _, _, err = cli("download", "camelyon17", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert "no checksum is published" in err and sha(data) in err
    (root / "camelyon17_v1.0").rename(tmp_path / "moved")
    server.serve(f"/m/{archive.filename}", data[:-10] + b"0123456789")
    status, _, err = cli("download", "camelyon17", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert status == 2 and sha(data) in err and not (root / "camelyon17_v1.0").exists()
    assert "remove that entry" in err  # the way out if the server re-packs its bundles


def test_licensed_datasets_say_where_to_get_them(tmp_path):
    status, _, err = cli("download", "imagenet", "--data-root", tmp_path)
    assert status == 2 and "image-net.org" in err and "shiftbench prepare imagenet" in err
    status, _, err = cli("download", "objectnet", "--data-root", tmp_path)
    assert status == 2 and "objectnet.dev" in err and "shiftbench prepare objectnet" in err


def test_every_catalogue_entry_names_its_source_and_a_real_url():
    for shift, a in sources.ARCHIVES.items():
        assert a.shift == shift and a.source and a.urls
        assert all(u.startswith("https://") for u in a.urls)
        assert a.sha256 is None or len(a.sha256) == 64
        assert (a.sha256 is None) == (not a.size_exact)  # only the WILDS bundles lack one


def test_prepare_imagenet_from_the_val_tar_and_devkit(tmp_path, monkeypatch):
    src = tmp_path / "src"
    fixtures.write_imagenet_val(src, layout="flat")
    val = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(val, "w") as tar:  # the real tar: 50,000 JPEGs, no folder
        for p in sorted((src / "imagenet" / "val").iterdir()):
            tar.add(p, arcname=p.name)
    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    devkit.write_bytes(tar_bytes(src / "imagenet" / "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12"))
    md5 = {k: hashlib.md5(p.read_bytes()).hexdigest() for k, p in (("val", val), ("devkit", devkit))}
    root = tmp_path / "data"
    status, _, err = cli("prepare", "imagenet", "--val-tar", val, "--devkit", devkit, "--data-root", root, "--no-progress")
    assert status == 2 and "29b22e2961454d5413ddabcf34fc5622" in err and not (root / "imagenet").exists()
    monkeypatch.setattr(sources, "IMAGENET_MD5", {k: (n, md5[k]) for k, (n, _) in sources.IMAGENET_MD5.items()})
    monkeypatch.setattr(install, "IMAGENET_MD5", sources.IMAGENET_MD5)
    status, out, err = cli("prepare", "imagenet", "--val-tar", val, "--devkit", devkit, "--data-root", root, "--no-progress")
    assert (root / "imagenet" / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").is_file()
    assert len(list((root / "imagenet" / "val").iterdir())) == 1000
    fixture_sizes(monkeypatch, root, ["imagenet"])
    status, out, _ = cli("check-data", "imagenet", "--data-root", root)
    assert status == 0, out
    # labels come from the devkit's ground truth, mapped through meta.mat, as the fixture wrote them
    from harness.registry import get_shift

    expected = fixtures.write_imagenet_val(tmp_path / "again", layout="flat")
    assert get_shift("imagenet").keys_and_labels(root) == expected


def test_prepare_objectnet_from_its_zip(tmp_path, monkeypatch):
    src = tmp_path / "src"
    fixtures.write_objectnet(src)
    zpath = tmp_path / "objectnet-1.0.zip"
    zpath.write_bytes(zip_bytes(src / "objectnet-1.0", "objectnet-1.0"))
    root = tmp_path / "data"
    status, out, err = cli("prepare", "objectnet", "--zip", zpath, "--data-root", root, "--no-progress")
    assert (root / "objectnet-1.0" / "mappings" / "folder_to_objectnet_label.json").is_file()
    assert sha(zpath.read_bytes()) in out  # no published checksum: recorded
    fixture_sizes(monkeypatch, root, ["objectnet"])
    status, out, _ = cli("check-data", "objectnet", "--data-root", root)
    assert status == 0, out


def test_a_damaged_objectnet_zip_changes_nothing(tmp_path):
    """No checksum is published for ObjectNet: a truncated zip shows itself while extracting, and
    neither what was extracted nor the data root made for it is left; no digest is recorded."""
    src = tmp_path / "src"
    fixtures.write_objectnet(src)
    data = zip_bytes(src / "objectnet-1.0", "objectnet-1.0")
    zpath = tmp_path / "objectnet-1.0.zip"
    zpath.write_bytes(data[: len(data) // 2])
    err = refused(["prepare", "objectnet", "--zip", zpath, "--data-root", tmp_path / "work" / "data", "--no-progress"],
                  tmp_path)  # fmt: skip
    assert str(zpath) in err and "fetch it again" in err
    err = refused(["prepare", "objectnet", "--zip", tmp_path / "nope.zip", "--data-root", tmp_path / "data"], tmp_path)
    assert err.endswith(f"--zip {tmp_path / 'nope.zip'}: no such file; give the objectnet-1.0.zip you downloaded")


def test_prepare_is_refused_while_another_command_prepares_the_same_dataset(tmp_path):
    """Another process holds ObjectNet's lock under the data root: ``prepare objectnet`` refuses at
    once in one line naming that lock and changes nothing; once it is let go the same command
    installs, and no lock file or folder is left."""
    src = tmp_path / "src"
    fixtures.write_objectnet(src)
    zpath = tmp_path / "objectnet-1.0.zip"
    zpath.write_bytes(zip_bytes(src / "objectnet-1.0", "objectnet-1.0"))
    root = tmp_path / "data"
    lock = root / install.LOCKS / "objectnet.lock"
    hold = "import sys\nfrom harness.files import file_lock\nwith file_lock(sys.argv[1], remove=True):\n" \
           "    print('held', flush=True)\n    sys.stdin.readline()\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert holder.stdout.readline().strip() == "held"
        err = refused(["prepare", "objectnet", "--zip", zpath, "--data-root", root, "--no-progress"], tmp_path)
        assert str(lock) in err and "another shiftbench command is installing it" in err
    finally:
        holder.communicate("\n", timeout=60)
    status, out, err = cli("prepare", "objectnet", "--zip", zpath, "--data-root", root, "--no-progress")
    assert "objectnet: extracted to" in out, err
    assert sorted(p.name for p in root.iterdir()) == [".shiftbench", "objectnet-1.0"]  # the ledger and the data


def test_a_refused_prepare_into_a_new_relative_data_root_leaves_no_folder(tmp_path, monkeypatch):
    """The lock taken under a data root given relative to the current folder goes, and so does
    the data root made for it."""
    monkeypatch.chdir(tmp_path)
    err = refused(["prepare", "objectnet", "--zip", "nope.zip", "--data-root", "new/data"], tmp_path)
    assert "--zip nope.zip: no such file" in err


def test_a_damaged_imagenet_val_tar_changes_nothing(tmp_path, monkeypatch):
    src = tmp_path / "src"
    fixtures.write_imagenet_val(src, layout="flat")
    val = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(val, "w") as tar:
        for p in sorted((src / "imagenet" / "val").iterdir()):
            tar.add(p, arcname=p.name)
    val.write_bytes(val.read_bytes()[: val.stat().st_size // 2])  # cut mid-member
    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    devkit.write_bytes(tar_bytes(src / "imagenet" / "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12"))
    md5 = {k: hashlib.md5(p.read_bytes()).hexdigest() for k, p in (("val", val), ("devkit", devkit))}
    monkeypatch.setattr(install, "IMAGENET_MD5", {k: (n, md5[k]) for k, (n, _) in sources.IMAGENET_MD5.items()})
    err = refused(["prepare", "imagenet", "--val-tar", val, "--devkit", devkit, "--data-root", tmp_path / "work" / "data",
                   "--no-progress"], tmp_path)  # fmt: skip
    assert str(val) in err and "damaged" in err


def test_the_progress_line_shows_bytes_rate_and_eta(monkeypatch):
    clock = iter([100.0, 102.0, 102.0])
    monkeypatch.setattr(dl.time, "monotonic", lambda: next(clock))
    bar = dl.Progress("imagenet-r.tar", 10 * 2**20, 2**20, enabled=False)
    bar.update(2**20)  # one MiB in two seconds, resumed at one MiB
    assert bar.line() == "imagenet-r.tar: 2.0 MiB of 10.0 MiB (20%), 512.0 KiB/s, ETA 0:00:16"


def test_prepare_objectnet_decrypts_the_password_protected_zip(tmp_path, monkeypatch):
    """The published zip is encrypted (ZipCrypto); built here with Info-ZIP's zip -P."""
    import shutil
    import subprocess

    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP zip not installed (apt-get install zip); it builds the encrypted fixture")
    src = tmp_path / "src"
    fixtures.write_objectnet(src)
    zpath = tmp_path / "objectnet-1.0.zip"
    subprocess.run(["zip", "-q", "-r", "-P", sources.OBJECTNET_PASSWORD, str(zpath), "objectnet-1.0"],
                   cwd=src, check=True)
    with zipfile.ZipFile(zpath) as zf:
        assert all(i.flag_bits & 1 for i in zf.infolist() if not i.is_dir())  # really encrypted
    root = tmp_path / "data"
    err = refused(["prepare", "objectnet", "--zip", zpath, "--password", "wrong", "--data-root", root, "--no-progress"],
                  tmp_path)  # nothing extracted, no data root made, no digest recorded  # fmt: skip
    assert "pass the password the dataset's site gives" in err
    status, out, err = cli("prepare", "objectnet", "--zip", zpath, "--data-root", root, "--no-progress")
    fixture_sizes(monkeypatch, root, ["objectnet"])
    status, out, _ = cli("check-data", "objectnet", "--data-root", root)
    assert status == 0, out


def test_a_damaged_archive_leaves_nothing_where_a_shift_looks(tmp_path):
    """No published checksum to stop it first (a WILDS bundle given with --archive): the damage
    shows during extraction, and what was extracted so far is removed."""
    src = tmp_path / "src"
    fixtures.write_camelyon17(src)
    data = tar_bytes(src / "camelyon17_v1.0", None)
    given = tmp_path / "camelyon17_v1.0.tar.gz"
    given.write_bytes(data[: len(data) * 2 // 3])
    root = tmp_path / "work" / "data"  # made for the extraction, removed with it
    err = refused(["download", "camelyon17", "--data-root", root, "--archive", given, "--no-progress"], tmp_path)
    assert "damaged" in err  # and a damaged copy's digest is not recorded


def test_a_server_that_announces_no_length_is_read_to_the_end(tmp_path, server, monkeypatch):
    """WILDS' sizes are approximate and a bundle may stream without a Content-Length: the body
    ends when the connection closes, and the digest (recorded, none being published) is of it all."""
    data = build_archive(tmp_path, "iwildcam")
    archive = register(monkeypatch, "iwildcam", data, size=len(data) + 12_345)
    server.serve(f"/m/{archive.filename}", data)
    server.faults[f"/m/{archive.filename}"] = "no-length"
    root = tmp_path / "data"
    status, out, err = cli("download", "iwildcam", "--data-root", root, "--mirror", server.base + "/m", "--no-progress")
    assert (root / "iwildcam_v2.0" / "metadata.csv").is_file(), err
    assert sha(data) in (root / install.LEDGER).read_text()
    assert [r for _, _, r in server.requests] == [None]  # one request: nothing mistaken for a drop


def test_list_names_every_archive_and_its_checksum_source():
    status, out, _ = cli("download", "--list")
    assert status == 0
    for shift, a in sources.ARCHIVES.items():
        line = next(x for x in out.splitlines() if x.startswith(shift + " "))
        assert a.filename in line and a.source in line
    assert "imagenet " in out and "licensed" in out


def test_extraction_needs_room_for_the_archive_again(tmp_path, monkeypatch):
    import collections

    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    given = tmp_path / "imagenet-a.tar"
    given.write_bytes(data)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10**9, 10**9, len(data) // 2))
    root = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="free space"):
        install.install(root, archive, given, progress=False)
    assert not (root / "imagenet-a").exists() and not (root / install.PARTIAL).exists()


def relative_state(root: Path) -> dict[str, str]:
    return {str(Path(p).relative_to(root)): v for p, v in tree_state(root).items()}


def test_two_downloads_of_one_shift_at_once_leave_one_complete_install(tmp_path, server, monkeypatch):
    """Two real processes download one shift into one data root, the first held half-way by the
    server until the second has started: the second waits for the first (saying whose lock it
    waits on), then finds the shift complete.
    One download, one install, and the data root holds exactly what a lone download leaves."""
    from harness.registry import get_shift

    data = build_archive(tmp_path, "imagenet-a")
    archive = register(monkeypatch, "imagenet-a", data)
    path = f"/m/{archive.filename}"
    server.serve(path, data)
    lone = tmp_path / "lone"
    cli("download", "imagenet-a", "--data-root", lone, "--mirror", server.base + "/m", "--no-progress")
    fixture_sizes(monkeypatch, lone, ["imagenet-a"])
    images = len(get_shift("imagenet-a").keys_and_labels(lone))
    expected = relative_state(lone)
    assert "imagenet-a/README.txt" in expected and len(expected) > 200

    server.held[path] = gate = threading.Event()  # the first download stops half-way until the second waits
    root = tmp_path / "data"
    script = Path(__file__).with_name("download_cli.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, str(script), "imagenet-a", sha(data), str(len(data)), str(images), "--",
            "download", "imagenet-a", "--data-root", str(root), "--mirror", server.base + "/m", "--no-progress"]
    gets = len(server.requests)
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = root / install.DOWNLOADS / f"{archive.filename}.part"
    deadline = time.monotonic() + 60
    while not part.is_file() and time.monotonic() < deadline:  # the first is downloading
        time.sleep(0.02)
    assert part.is_file() and first.poll() is None
    second = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = ""
    try:  # until the second waits, or (before the lock) starts its own download of the same .part
        while (line := second.stderr.readline()) and "waiting for" not in line and "downloading" not in line:
            said += line
        said += line
    finally:
        gate.set()
    outs = [first.communicate(timeout=120), second.communicate(timeout=120)]
    outs[1] = (outs[1][0], said + outs[1][1])
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert "imagenet-a: extracted to" in outs[0][0] and "complete" in outs[0][0]
    assert "already complete" in outs[1][0] and "extracted" not in outs[1][0]
    lock = root / install.LOCKS / "imagenet-a.lock"
    assert f"waiting for {lock}" in outs[1][1]  # the second said whose lock it waited on
    assert [r for r in server.requests[gets:] if r[0] == "GET"] == [("GET", path, None)]  # one writer of the .part
    assert relative_state(root) == expected
