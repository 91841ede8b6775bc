"""Hostile archives and arrays are refused with a message naming the member, and reading them
writes nothing anywhere."""

import gzip
import io
import os
import tarfile
import zipfile

import leaderboard_toy as toy
import numpy as np
import pytest
from test_submission import raw_tar

from reports.safe_archive import BundleError, Limits, MiB, read_bundle, read_npz
from reports.submission_validate import validate_bundle

SMALL = Limits(max_compressed=4 * MiB, max_member=1 * MiB, max_total=2 * MiB, max_members=20)


def refused(path, limits=None):
    with pytest.raises(BundleError) as info:
        read_bundle(path, limits or Limits())
    return info.value.code, str(info.value)


def link(name, kind, target="/etc/passwd"):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "entry, message",
    [
        (("../evil.txt", b"x"), "member '../evil.txt' contains '..' (path traversal); refused"),
        (
            ("predictions/../../evil", b"x"),
            "member 'predictions/../../evil' contains '..' (path traversal); refused",
        ),
        (("/etc/cron.d/evil", b"x"), "member '/etc/cron.d/evil' has an absolute path; refused"),
        (("C:\\evil.txt", b"x"), "member 'C:\\\\evil.txt' has an absolute path; refused"),
        (
            link("results.jsonl", tarfile.SYMTYPE),
            "member 'results.jsonl' is a symbolic link to '/etc/passwd'; only plain files are allowed",
        ),
        (
            link("results.jsonl", tarfile.LNKTYPE),
            "member 'results.jsonl' is a hard link to '/etc/passwd'; only plain files are allowed",
        ),
        (link("dev", tarfile.CHRTYPE), "member 'dev' is a device; only plain files are allowed"),
        (link("blk", tarfile.BLKTYPE), "member 'blk' is a device; only plain files are allowed"),
        (link("fifo", tarfile.FIFOTYPE), "member 'fifo' is a FIFO; only plain files are allowed"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, entry, message):
    path = raw_tar(tmp_path / "bad.tar.gz", [("manifest.json", b"{}"), entry])
    code, text = refused(path)
    assert code == "unsafe-member"
    assert text == f"{path}: {message}"


def test_traversal_is_reported_by_validate_and_writes_nothing(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = raw_tar(tmp_path / "bad.tar.gz", [("../../escaped.txt", b"owned")])
    before = sorted(os.walk(tmp_path))
    v = validate_bundle(path, required=toy.SUITE, spec_lookup=toy.lookup)
    assert [str(f) for f in v.failures] == [
        f"[unsafe-member] {path}: member '../../escaped.txt' contains '..' (path traversal); refused"
    ]
    assert sorted(os.walk(tmp_path)) == before


def test_member_bomb_is_refused_by_its_header(tmp_path):
    path = raw_tar(tmp_path / "bomb.tar.gz", [("results.jsonl", bytes(3 * MiB))])
    assert path.stat().st_size < 10_000  # 3 MiB of zeros compress ~1000x
    assert refused(path, SMALL) == (
        "too-large",
        f"{path}: member 'results.jsonl' is 3 MiB, over the 1 MiB per-member limit; refused",
    )


def test_total_over_limit_is_refused(tmp_path):
    path = raw_tar(
        tmp_path / "many.tar.gz", [(f"predictions/m/s{i}.npz", bytes(MiB - 1024)) for i in range(3)]
    )
    assert refused(path, SMALL) == (
        "too-large",
        f"{path}: members total over the 2 MiB limit; refused",
    )


def test_inflation_is_capped_even_inside_tar_headers(tmp_path):
    """A pax header is read by tarfile itself before any member check: the stream cap stops it."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    payload = b"9999999 comment=" + b"a" * (8 * MiB) + b"\n"
    pax.size = len(payload)
    buf = io.BytesIO()
    buf.write(pax.tobuf(format=tarfile.USTAR_FORMAT))
    buf.write(payload + bytes(-len(payload) % 512))
    buf.write(bytes(1024))
    path = tmp_path / "pax.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    code, text = refused(path, SMALL)
    assert code == "too-large"
    assert (
        "inflates past the 2 MiB limit (a decompression bomb or an oversized bundle); refused"
        in text
    )


def test_too_many_members(tmp_path):
    path = raw_tar(tmp_path / "n.tar.gz", [(f"f{i}", b"") for i in range(21)])
    assert refused(path, SMALL) == ("too-large", f"{path}: more than 20 members; refused")


def test_duplicate_member_names(tmp_path):
    path = raw_tar(tmp_path / "d.tar.gz", [("results.jsonl", b"a"), ("results.jsonl", b"b")])
    assert refused(path) == (
        "duplicate-member",
        f"{path}: member 'results.jsonl' appears twice; refused",
    )


def test_not_a_tarball(tmp_path):
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(b"this is not gzip")
    code, text = refused(path)
    assert code == "corrupt" and text.startswith(f"{path}: not a readable .tar.gz bundle")


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_with_object_array_is_refused():
    data = npz_bytes(keys=np.array([{"a": 1}], dtype=object))
    with pytest.raises(
        BundleError, match=r"array 'keys.npy' holds Python objects \(needs pickle\); refused"
    ):
        read_npz(data, "p.npz", MiB)


def test_npz_header_lying_about_its_shape_is_refused():
    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        raw, {"descr": "<f2", "fortran_order": False, "shape": (10**6, 1000)}
    )
    raw.write(bytes(64))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("logits.npy", raw.getvalue())
    with pytest.raises(
        BundleError, match=r"array 'logits.npy' declares 2000000000 bytes but holds"
    ):
        read_npz(buf.getvalue(), "p.npz", MiB)


def test_npz_bomb_is_refused():
    data = npz_bytes(logits=np.zeros((2, MiB), dtype=np.float16))
    small = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        dst.writestr("logits.npy", src.read("logits.npy"))
    assert len(small.getvalue()) < 50_000
    with pytest.raises(BundleError, match=r"p.npz: .npz inflates past the 1 MiB limit; refused"):
        read_npz(small.getvalue(), "p.npz", MiB)
