"""Round trip and tampering: each edit to a valid bundle is caught with its own message."""

import gzip
import io
import json
import tarfile

import leaderboard_toy as toy
import numpy as np
import pytest

from harness.api import Predictions
from reports.safe_archive import read_bundle
from reports.submission import load_card, pack, write_bundle
from reports.submission_validate import protocol_key, validate_bundle


def check(path, **kw):
    return validate_bundle(path, required=toy.SUITE, get_shift=toy.get_shift, **kw)


@pytest.fixture
def bundle(tmp_path, run_dir, card):
    out = tmp_path / "sub.tar.gz"
    write_bundle(run_dir, load_card(card), out)
    return out


def unpack(path):
    members = read_bundle(path)
    return json.loads(members.pop("manifest.json")), members


def test_valid_bundle_round_trips(bundle, run_dir):
    v = check(bundle)
    assert v.ok, v.failures
    manifest, members = unpack(bundle)
    assert manifest["model"] == "toy-net"
    assert manifest["card"]["method"] == {"kind": "wise-ft", "alpha": 0.5}
    assert set(manifest["predictions"]) == set(toy.SUITE)
    assert manifest["shifts"]["toy-o"] == {
        "version": "1.0",
        "protocol": toy.O_PROTOCOL,
        "expected_size": 9,
    }
    assert members["results.jsonl"] == (run_dir / "results.jsonl").read_bytes()
    for shift in toy.SUITE:
        assert (
            members[f"predictions/toy-net/{shift}.npz"]
            == (run_dir / f"predictions/toy-net/{shift}.npz").read_bytes()
        )
    # recomputed scores equal the independently computed claims
    claimed = {
        json.loads(line)["setting"]: json.loads(line)["metrics"]["top1"]
        for line in members["results.jsonl"].decode().splitlines()
    }
    assert {s: sc.top1 for s, sc in v.scores.items()} == pytest.approx(claimed, abs=1e-12)
    assert v.scores["toy@toy-r"].n == 16  # toy labels 1, 3, 4, 8 appear 4 times each in 40
    assert v.scores["toy@toy-o"].n == 20  # labels 0, 2, 5, 7, 9


def test_bundle_is_deterministic(tmp_path, run_dir, card, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda *a: "2026-01-01T00:00:00Z")
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    write_bundle(run_dir, load_card(card), a)
    write_bundle(run_dir, load_card(card), b)
    assert a.read_bytes() == b.read_bytes()


def rewrite(path, out, edit):
    """Apply ``edit(manifest, members)`` and repack without fixing any hash."""
    manifest, members = unpack(path)
    edit(manifest, members)
    pack(manifest, members, out)
    return out


def messages(v, code):
    return [f.message for f in v.failures if f.code == code]


def test_edited_metric_is_caught(bundle, tmp_path):
    def edit(manifest, members):
        rows = [json.loads(line) for line in members["results.jsonl"].decode().splitlines()]
        rows[0]["metrics"]["top1"] = 0.99
        members["results.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        manifest["files"]["results.jsonl"]["sha256"] = (
            __import__("hashlib").sha256(members["results.jsonl"]).hexdigest()
        )
        manifest["files"]["results.jsonl"]["size"] = len(members["results.jsonl"])

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert v.codes() == ["metric-mismatch"]
    assert v.failures[0].message.startswith("toy: claimed top1 0.99 but the predictions give 0.")
    assert "of 40)" in v.failures[0].message


def test_edited_metric_without_rehash_is_caught_by_hash(bundle, tmp_path):
    def edit(manifest, members):
        members["results.jsonl"] = members["results.jsonl"].replace(b'"top1": 0.', b'"top1": 1.', 1)

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert "results.jsonl: sha256 differs from manifest.json (file edited or swapped)" in messages(
        v, "hash-mismatch"
    )
    assert "metric-mismatch" in v.codes()


def test_swapped_prediction_file_is_caught(bundle, tmp_path):
    def edit(manifest, members):
        a, b = "predictions/toy-net/toy-v2.npz", "predictions/toy-net/toy.npz"
        members[a], members[b] = members[b], members[a]

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    hm = messages(v, "hash-mismatch")
    assert (
        "predictions/toy-net/toy-v2.npz: sha256 differs from manifest.json (file edited or swapped)"
        in hm
    )
    assert (
        "predictions/toy-net/toy-v2.npz: holds 'toy-net' on 'toy', not 'toy-net' on 'toy-v2' (file swapped)"
        in hm
    )


def test_swapped_predictions_with_rewritten_hashes_are_caught_by_recomputation(tmp_path, card):
    """A cheater replaces the predictions by a better model's and fixes every hash: the claimed
    metrics of the original rows no longer follow from the predictions."""
    run = toy.write_run(tmp_path / "run", {"toy-net": (0.3, 1)})
    good = toy.make_predictions("toy-net", 1.0, 9)
    out = tmp_path / "sub.tar.gz"
    write_bundle(run, load_card(card), out)

    def edit(manifest, members):
        import hashlib

        for shift, p in good.items():
            rel = f"predictions/toy-net/{shift}.npz"
            buf = tmp_path / f"{shift}.npz"
            p.save(buf)
            members[rel] = buf.read_bytes()
            manifest["files"][rel] = {
                "sha256": hashlib.sha256(members[rel]).hexdigest(),
                "size": len(members[rel]),
            }
            manifest["predictions"][shift]["sha256"] = p.sha256()

    v = check(rewrite(out, tmp_path / "t.tar.gz", edit))
    assert "metric-mismatch" in v.codes()
    assert "hash-mismatch" in v.codes()  # result rows still name the old predictions' hashes


def edit_predictions(manifest, members, shift, change, scratch):
    """Replace ``shift``'s predictions by ``change(keys, labels, logits)`` and fix the manifest's
    hashes (the result rows keep theirs): the forger's best effort."""
    import hashlib

    rel = f"predictions/toy-net/{shift}.npz"
    with np.load(io.BytesIO(members[rel]), allow_pickle=False) as z:
        keys, labels, logits = change(z["keys"].copy(), z["labels"].copy(), z["logits"].copy())
    p = Predictions("toy-net", shift, keys, labels, logits)
    p.save(scratch / f"{shift}.npz")
    members[rel] = (scratch / f"{shift}.npz").read_bytes()
    manifest["files"][rel] = {
        "sha256": hashlib.sha256(members[rel]).hexdigest(),
        "size": len(members[rel]),
    }
    manifest["predictions"][shift].update(sha256=p.sha256(), n=len(p))


def test_dropped_key_is_caught(bundle, tmp_path):
    def edit(manifest, members):
        edit_predictions(
            manifest, members, "toy-r", lambda k, y, z: (k[1:], y[1:], z[1:]), tmp_path
        )

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert (
        "toy-r: 11 predictions but the shift has 12 examples (keys dropped or added)"
        in messages(v, "count-mismatch")
    )
    assert "toy-r: row claims n=12 but the predictions give 11 examples" in messages(
        v, "count-mismatch"
    )


def test_duplicate_key_is_caught(bundle, tmp_path):
    def duplicate(keys, labels, logits):
        keys[1] = keys[0]
        return keys, labels, logits

    v = check(
        rewrite(
            bundle,
            tmp_path / "t.tar.gz",
            lambda m, mem: edit_predictions(m, mem, "toy-v2", duplicate, tmp_path),
        )
    )
    assert messages(v, "duplicate-key") == [
        "toy-v2: 1 keys appear more than once (e.g. '0/img_0000.png')"
    ]


def test_missing_required_shift(bundle):
    v = validate_bundle(
        bundle,
        required=(*toy.SUITE, "toy-c"),
        get_shift=lambda n: toy.get_shift(n if n != "toy-c" else "toy"),
    )
    assert messages(v, "missing-shift") == [
        "toy-c: required by the leaderboard but has no result row in the bundle"
    ]


def test_other_shift_version_is_refused(bundle, tmp_path):
    def edit(manifest, members):
        manifest["shifts"]["toy-v2"]["version"] = "0.9"

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert (
        "toy-v2: evaluated as version 0.9 but the benchmark uses 1.0; rerun with this harness"
        in messages(v, "protocol-mismatch")
    )
    assert (
        "toy-v2: result row's version/protocol differ from the manifest's for toy-v2"
        in messages(v, "protocol-mismatch")
    )


def test_rows_must_agree_with_the_manifest_protocol(bundle, tmp_path):
    def edit(manifest, members):
        manifest["shifts"]["toy-o"]["protocol"]["crop"] = "none"

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert messages(v, "protocol-mismatch") == [
        "toy-o: result row's version/protocol differ from the manifest's for toy-o",
        "toy@toy-o: result row's version/protocol differ from the manifest's for toy-o",
    ]


def test_other_protocol_tags_are_valid_and_keyed_apart(tmp_path, card, bundle):
    run = toy.write_run(
        tmp_path / "run2",
        {"toy-net": (0.7, 1)},
        protocols={"toy-o": {**toy.O_PROTOCOL, "crop": "none"}},
    )
    other = tmp_path / "other.tar.gz"
    write_bundle(run, load_card(card), other)
    v1, v2 = check(bundle), check(other)
    assert v1.ok and v2.ok, v2.failures
    k1, k2 = protocol_key(v1.manifest, toy.SUITE), protocol_key(v2.manifest, toy.SUITE)
    assert k1[0] != k2[0]
    assert (
        k1[1]
        == "toy 1.0; toy-o 1.0 [crop=border-2px,head=toy-10,projection=max]; toy-r 1.0; toy-v2 1.0"
    )
    assert "toy-o 1.0 [crop=none,head=toy-10,projection=max]" in k2[1]


def test_schema_violation_names_the_field(bundle, tmp_path):
    def edit(manifest, members):
        manifest["card"]["method"]["alpha"] = 1.5
        del manifest["card"]["licence"]

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert messages(v, "schema") == [
        "manifest.json: at card: 'licence' is a required property",
        "manifest.json: at card/method/alpha: 1.5 is greater than the maximum of 1",
    ]


def test_unlisted_member_is_refused(bundle, tmp_path):
    v = check(
        rewrite(
            bundle,
            tmp_path / "t.tar.gz",
            lambda m, mem: mem.__setitem__("predictions/toy-net/extra.npz", b"x"),
        )
    )
    assert messages(v, "unlisted-member") == [
        "member 'predictions/toy-net/extra.npz' is not listed in manifest.json; refused"
    ]


def test_duplicate_json_key_in_manifest(bundle, tmp_path):
    manifest, members = unpack(bundle)
    text = json.dumps(manifest).replace('"format": ', '"format": "x", "format": ', 1)
    out = tmp_path / "t.tar.gz"
    raw_tar(out, [("manifest.json", text.encode())] + list(members.items()))
    assert [str(f) for f in check(out).failures] == [
        "[malformed] manifest.json: duplicate key 'format'; each key may appear once"
    ]


def raw_tar(out, entries, gz=True):
    """Write members as given (the hostile side: no checks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip.compress(buf.getvalue()) if gz else buf.getvalue())
    return out


def test_rows_of_stale_predictions_are_left_out(tmp_path, run_dir, card):
    """A rerun appends rows; only those scored from the predictions on disk are bundled."""
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    stale = json.loads(lines[1])
    stale.update(predictions_sha256="0" * 64, metrics={"top1": 0.123})
    (run_dir / "results.jsonl").write_text("\n".join([json.dumps(stale), *lines]) + "\n")
    out = tmp_path / "sub.tar.gz"
    write_bundle(run_dir, load_card(card), out)
    _, members = unpack(out)
    assert members["results.jsonl"].decode().splitlines() == lines
    assert check(out).ok


def test_class_map_shipped_with_the_data_needs_the_data(bundle, tmp_path):
    """ObjectNet's map lives in the dataset's mapping files: without the data the rows that use
    it cannot be recomputed, and say how to fix that; with the data they validate."""
    v = validate_bundle(bundle, required=toy.SUITE, get_shift=toy.get_shift_late_map)
    assert [str(f) for f in v.failures] == [
        f"[needs-data] {s}: scored through a class map that ships with the toy-o dataset, not with the harness; "
        "validate with --data-root DIR to recompute it"
        for s in ("toy-o", "toy@toy-o")
    ]
    data = tmp_path / "data"
    toy.write_dataset(data)
    v = validate_bundle(
        bundle, required=toy.SUITE, get_shift=toy.get_shift_late_map, data_root=data
    )
    assert v.ok, v.failures


def _rehash(manifest, members, name):
    import hashlib

    manifest["files"][name] = {
        "sha256": hashlib.sha256(members[name]).hexdigest(),
        "size": len(members[name]),
    }


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"model": "toy-net", ',
            "[malformed] results.jsonl line 2: malformed JSON at line 1 column 22: Expecting property name enclosed in double quotes",
        ),
        (
            '{"model": "a", "model": "b"}',
            "[malformed] results.jsonl line 2: duplicate key 'model'; each key may appear once",
        ),
        (
            '{"top1": NaN}',
            "[malformed] results.jsonl line 2: NaN is not valid JSON; write numbers as finite values",
        ),
        ('{"model": "toy-net"}', "[schema] results.jsonl line 2: not a result row ("),
        # valid JSON syntax that overflows to infinity was read as inf
        (
            '{"top1": 1e999}',
            "[malformed] results.jsonl line 2: 1e999 is not a finite number; write numbers as finite values",
        ),
    ],
)
def test_malformed_results_lines(bundle, tmp_path, line, message):
    def edit(manifest, members):
        lines = members["results.jsonl"].decode().splitlines()
        lines[1] = line
        members["results.jsonl"] = ("\n".join(lines) + "\n").encode()
        _rehash(manifest, members, "results.jsonl")

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert any(str(f).startswith(message) for f in v.failures), v.failures
    assert not v.ok


def test_a_data_shipped_class_map_requires_the_same_class_id_row(bundle, tmp_path):
    """With the data, toy-o (like ObjectNet) has a class map, so its ID reference is the view
    ``toy@toy-o``: a bundle without that row is incomplete even though full ``toy`` is there."""

    def drop_view(manifest, members):
        lines = members["results.jsonl"].decode().splitlines()
        kept = [x for x in lines if json.loads(x)["setting"] != "toy@toy-o"]
        assert len(kept) == len(lines) - 1
        members["results.jsonl"] = "".join(x + "\n" for x in kept).encode()
        _rehash(manifest, members, "results.jsonl")

    data = tmp_path / "data"
    toy.write_dataset(data)
    edited = rewrite(bundle, tmp_path / "no-view.tar.gz", drop_view)
    v = validate_bundle(edited, required=toy.SUITE, get_shift=toy.get_shift_late_map, data_root=data)
    assert [str(f) for f in v.failures] == ["[missing-shift] toy-o: its ID reference 'toy@toy-o' has no result row in the bundle"]


def test_a_bundle_under_the_published_tables_names_is_refused_naming_the_engines(bundle, tmp_path):
    """The leaderboard reads the engine's setting names: a bundle that calls ImageNetV2
    ``imagenetv2-matched-frequency`` or a names-head ObjectNet ``objectnet`` gets one reason per
    old name, naming the engine's name and the fix, and nothing else is checked."""

    def rename_shift(manifest, members):
        manifest["shifts"]["imagenetv2-matched-frequency"] = manifest["shifts"].pop("toy-v2")
        manifest["predictions"]["imagenetv2-matched-frequency"] = manifest["predictions"].pop("toy-v2")

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", rename_shift))
    assert v.codes() == ["old-name"]
    assert messages(v, "old-name")[0] == (
        "manifest.json shifts: 'imagenetv2-matched-frequency' is the published tables' name of the engine's "
        "'imagenetv2'; the leaderboard reads the engine's setting names only: rebuild the bundle with "
        "`shiftbench submit` from the run directory (`shiftbench run` names it 'imagenetv2')"
    )

    def names_head_objectnet(manifest, members):
        manifest["shifts"]["objectnet"] = {**manifest["shifts"]["toy-o"], "protocol": {"head": "objectnet-113-names"}}

    v = check(rewrite(bundle, tmp_path / "o.tar.gz", names_head_objectnet))
    assert v.codes() == ["old-name"] and "the engine's 'objectnet-names'" in v.failures[0].message

    def rename_row(manifest, members):
        rows = [json.loads(line) for line in members["results.jsonl"].decode().splitlines()]
        (v2,) = [r for r in rows if r["setting"] == "toy-v2"]
        v2["setting"] = v2["shift"] = "imagenetv2-matched-frequency"
        members["results.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        _rehash(manifest, members, "results.jsonl")

    v = check(rewrite(bundle, tmp_path / "r.tar.gz", rename_row))
    assert any(m.startswith("results.jsonl line ") and "the engine's 'imagenetv2'" in m for m in messages(v, "old-name"))
    assert not v.ok
