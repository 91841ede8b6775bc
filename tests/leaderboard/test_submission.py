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
from reports.submission_validate import protocol_key, setting_view, validate_bundle


def check(path, **kw):
    return validate_bundle(path, required=toy.SUITE, spec_lookup=toy.lookup, **kw)


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


def test_setting_view_by_hand():
    """ID view on toy-r's classes: keep labels 1,3,4,8, relabel to 0..3, score their columns."""
    logits = np.zeros((5, 10), dtype=np.float16)
    labels = np.array([1, 2, 8, 4, 3])
    logits[0, 1] = 5  # label 1 -> target 0, predicted 1 -> target 0: correct
    logits[1, 2] = 5  # label 2 is not in toy-r: dropped
    logits[2, 0] = 9  # label 8 -> target 3; column 0 is outside the map, best inside is 8
    logits[2, 8] = 1
    logits[3, 3] = 5  # label 4 -> target 2; predicted 3 -> target 1: wrong
    logits[4, 3] = 5  # label 3 -> target 1: correct
    p = {"toy": Predictions("m", "toy", np.array(list("abcde")), labels, logits)}
    scores, target = setting_view("toy@toy-r", p, toy.SPECS, toy.R_MAP.digest())
    assert target.tolist() == [0, 3, 2, 1]
    assert scores.argmax(1).tolist() == [0, 3, 1, 1]


def test_setting_view_max_over_members_by_hand():
    """toy-o target 0 collects source classes 0 and 2: a max at column 2 predicts target 0."""
    logits = np.zeros((2, 10), dtype=np.float16)
    logits[0, 2] = 4
    logits[0, 5] = 3
    logits[1, 9] = 2
    logits[1, 0] = 1
    p = {"toy-o": Predictions("m", "toy-o", np.array(["x", "y"]), np.array([0, 2]), logits)}
    scores, labels = setting_view("toy-o", p, toy.SPECS, toy.O_MAP.digest())
    assert scores.tolist() == [[4, 3, 0], [1, 0, 2]]
    assert scores.argmax(1).tolist() == labels.tolist()


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


def test_dropped_key_is_caught(bundle, tmp_path):
    def edit(manifest, members):
        import hashlib

        rel = "predictions/toy-net/toy-r.npz"
        with np.load(io.BytesIO(members[rel]), allow_pickle=False) as z:
            p = Predictions("toy-net", "toy-r", z["keys"][1:], z["labels"][1:], z["logits"][1:])
        p.save(tmp_path / "r.npz")
        members[rel] = (tmp_path / "r.npz").read_bytes()
        manifest["files"][rel] = {
            "sha256": hashlib.sha256(members[rel]).hexdigest(),
            "size": len(members[rel]),
        }
        manifest["predictions"]["toy-r"].update(sha256=p.sha256(), n=11)

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert (
        "toy-r: 11 predictions but the shift has 12 examples (keys dropped or added)"
        in messages(v, "count-mismatch")
    )
    assert "toy-r: row claims n=12 but the predictions give 11 examples" in messages(
        v, "count-mismatch"
    )


def test_duplicate_key_is_caught(bundle, tmp_path):
    def edit(manifest, members):
        import hashlib

        rel = "predictions/toy-net/toy-v2.npz"
        with np.load(io.BytesIO(members[rel]), allow_pickle=False) as z:
            keys = z["keys"].copy()
            keys[1] = keys[0]
            p = Predictions("toy-net", "toy-v2", keys, z["labels"], z["logits"])
        p.save(tmp_path / "v2.npz")
        members[rel] = (tmp_path / "v2.npz").read_bytes()
        manifest["files"][rel] = {
            "sha256": hashlib.sha256(members[rel]).hexdigest(),
            "size": len(members[rel]),
        }
        manifest["predictions"]["toy-v2"]["sha256"] = p.sha256()

    v = check(rewrite(bundle, tmp_path / "t.tar.gz", edit))
    assert messages(v, "duplicate-key") == [
        "toy-v2: 1 keys appear more than once (e.g. '0/img_0000.png')"
    ]


def test_missing_required_shift(bundle):
    v = validate_bundle(
        bundle,
        required=(*toy.SUITE, "toy-c"),
        spec_lookup=lambda n: toy.lookup(n) if n != "toy-c" else toy.SPECS["toy"],
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
        "toy-o: result row's version/protocol differ from the manifest's for toy-o"
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
