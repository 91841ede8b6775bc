"""check-data, pack and make-heldout from the command line; bad input named with its fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.registry import get_shift
from shifts import fixtures, wds
from shifts.check import check_shift, require_complete
from shifts.images import BadImageError

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from doubles import tree_state  # noqa: E402


@pytest.fixture
def only_builtin_shifts(monkeypatch):
    """Survey only the shifts this package declares, whatever other test packages registered."""
    from importlib.metadata import entry_points

    from harness import registry

    names = sorted(ep.name for ep in entry_points(group="shiftbench.shifts"))
    monkeypatch.setattr(registry.shifts, "names", lambda: names)


@pytest.fixture
def r_root(tmp_path):
    fixtures.write_imagenet_r(tmp_path)
    return tmp_path


def test_check_data_reports_counts_and_partial_data_is_an_error(r_root, capsys):
    assert (
        main(["check-data", "--data-root", str(r_root), "imagenet-r", "--json"]) == 2
    )  # 200 of 30,000
    rep = json.loads(capsys.readouterr().out)
    assert rep["found"] and not rep["complete"] and rep["n"] == 200 and rep["n_expected"] == 30_000
    assert rep["class_counts"]["0"] == 1 and len(rep["class_counts"]) == 200
    assert rep["path"].endswith("imagenet-r") and rep["homepage"].startswith("https://")


def test_check_data_not_found_lists_where_it_looked(tmp_path, capsys, only_builtin_shifts):
    assert main(["check-data", "--data-root", str(tmp_path), "imagenet-sketch"]) == 2
    out = capsys.readouterr().out
    assert "NOT FOUND" in out and str(tmp_path / "sketch") in out and "wds_imagenet-sketch" in out
    assert (
        main(["check-data", "--data-root", str(tmp_path)]) == 0
    )  # a survey: absence is not an error


def test_check_data_complete_when_expected_size_matches(tmp_path):
    fixtures.write_iwildcam(tmp_path)
    shift = get_shift("iwildcam")
    report = check_shift(shift, tmp_path, "id_test")  # every WILDS split has a published size
    assert not report.complete and report.problems == ["1 images, expected 8154"]
    with pytest.raises(ValueError, match="5 images, expected 42791"):
        require_complete(shift, tmp_path)


def test_pack_cli_variant_manifest_and_determinism(tmp_path, capsys):
    fixtures.write_imagenetv2(tmp_path, "top-images")
    args = [
        "pack",
        "imagenetv2",
        "--variant",
        "top-images",
        "--data-root",
        str(tmp_path),
        "--maxcount",
        "300",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    ma = json.loads((tmp_path / "a/test/manifest.json").read_text())
    mb = json.loads((tmp_path / "b/test/manifest.json").read_text())
    assert (
        ma == mb and ma["n"] == 1000 and [s["count"] for s in ma["shards"]] == [300, 300, 300, 100]
    )
    assert (tmp_path / "a/test/nshards.txt").read_text().strip() == "4"
    assert ma["labels"][ma["keys"].index(next(k for k in ma["keys"] if k.startswith("10/")))] == 10
    assert (tmp_path / "a/test/0.tar").read_bytes() == (tmp_path / "b/test/0.tar").read_bytes()
    assert wds.sha256_file(tmp_path / "a/test/3.tar") == ma["shards"][3]["sha256"]
    names = (tmp_path / "a/classnames.txt").read_text().splitlines()
    assert len(names) == 1000 and names[0] == "tench"
    assert main(args + ["--out", str(tmp_path / "a")]) == 2  # refuses to overwrite
    assert "already holds shards" in capsys.readouterr().err


def refused(args: list, watched: Path, capsys) -> str:
    """The real command line exits 2 and leaves ``watched`` exactly as it was; its error line."""
    before = tree_state(watched)
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    assert tree_state(watched) == before
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_pack_stopped_before_its_first_shard_leaves_nothing(r_root, tmp_path, capsys):
    """Nothing to resume from: no --out folder, split folder, source marker or temporary shard."""
    bad = sorted((r_root / "imagenet-r").rglob("*.jpg"))[3]
    bad.write_bytes(b"not a jpeg")
    err = refused(["pack", "imagenet-r", "--data-root", r_root, "--out", tmp_path / "out" / "packed"], tmp_path, capsys)
    assert str(bad) in err and "replace the file and rerun" in err


def test_pack_refuses_an_out_that_is_a_file(r_root, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    err = refused(["pack", "imagenet-r", "--data-root", r_root, "--out", tmp_path / "out"], tmp_path, capsys)
    assert err.endswith(f"--out {tmp_path / 'out'} exists and is not a folder; give a folder path")
    err = refused(["pack", "imagenet-r", "--data-root", r_root, "--out", tmp_path / "out" / "packed"], tmp_path, capsys)
    assert err.endswith(f"--out {tmp_path / 'out' / 'packed'}: {tmp_path / 'out'} is a file, not a folder; give another path")
    (tmp_path / "out").unlink()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "test").write_text("a file where the split's shards go")
    err = refused(["pack", "imagenet-r", "--data-root", r_root, "--out", tmp_path / "out"], tmp_path, capsys)
    assert f"{tmp_path / 'out' / 'test'} exists and is not a folder" in err


def test_pack_rejects_variant_for_other_shifts(tmp_path, capsys):
    assert (
        main(
            [
                "pack",
                "imagenet-r",
                "--variant",
                "x",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--variant applies to imagenetv2 only" in capsys.readouterr().err


def test_corrupt_image_is_named_or_skipped_and_recorded(r_root):
    shift = get_shift("imagenet-r")
    victim = r_root / "imagenet-r" / "n01443537" / "jpeg_0.jpg"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated JPEG
    with pytest.raises(BadImageError, match="n01443537/jpeg_0.jpg: cannot decode image"):
        list(shift.examples(r_root))
    skipped: list[str] = []
    got = list(shift.examples(r_root, skip_bad_images=True, skipped=skipped))
    assert skipped == ["n01443537/jpeg_0.jpg"] and len(got) == 199
    with pytest.raises(ValueError, match="needs a 'skipped' list"):
        list(shift.examples(r_root, skip_bad_images=True))


def test_truncated_shard_is_named(r_root):
    shift = get_shift("imagenet-r")
    from shifts.pack import pack

    pack(shift, r_root, r_root / "wds" / "imagenet-r", maxcount=150, progress=False)
    shard = r_root / "wds/imagenet-r/test/1.tar"
    data = shard.read_bytes()
    for cut in (len(data) // 2, len(data) // 3, 700):  # mid-member, mid-header, first member
        shard.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="1.tar: truncated or corrupt shard"):
            list(shift.examples(r_root, form="wds"))
    (r_root / "wds/imagenet-r/test/1.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"\['1.tar'\] are missing"):
        list(shift.examples(r_root, form="wds"))


def test_shard_label_outside_label_space_is_refused(tmp_path):
    samples = [wds.ShardSample("a.jpg", 200, fixtures.image_bytes((1, 2, 3)), "jpg")]
    wds.write_split(tmp_path / "wds" / "imagenet-r", "test", samples, [], [])
    with pytest.raises(ValueError, match="label 200 outside imagenet-r's 200 classes"):
        list(get_shift("imagenet-r").examples(tmp_path, form="wds"))


def test_key_quoting_round_trips():
    for key in ["n01/ILSVRC2012_val_00000001.JPEG", "a%2Eb.c", "x/y.z.png", "s0000001"]:
        q = wds.quote_key(key)
        assert "." not in q and wds.unquote_key(q) == key


def test_make_heldout_cli(tmp_path):
    fixtures.write_imagenet_train(tmp_path, per_class=2)
    assert (
        main(["make-heldout", "--data-root", str(tmp_path), "--per-class", "1", "--seed", "3"]) == 0
    )
    keys = (tmp_path / "imagenet/heldout_keys.txt").read_text().split()
    assert len(keys) == 1000 and keys[0].startswith("n01440764/")
    before = tree_state(tmp_path)  # a class short of images is found before the list is rewritten
    assert main(["make-heldout", "--data-root", str(tmp_path), "--per-class", "5"]) == 2
    assert tree_state(tmp_path) == before


def test_transform_gets_images_that_decode_only_when_used(r_root):
    """A transform that ignores an image (a manifest pass, a worker's share) costs no decoding."""
    shift = get_shift("imagenet-r")
    victim = r_root / "imagenet-r" / "n01443537" / "jpeg_0.jpg"
    victim.write_bytes(b"not an image")
    keys = [
        e.key for e in shift.examples(r_root, lambda img: None)
    ]  # never touches pixels: no error
    assert len(keys) == 200
    skipped: list[str] = []
    sizes = [
        e.image
        for e in shift.examples(r_root, lambda img: img.size, skip_bad_images=True, skipped=skipped)
    ]
    assert skipped == ["n01443537/jpeg_0.jpg"] and sizes[0] == (16, 16) and len(sizes) == 199


def test_check_data_deep_finds_bad_images_and_altered_shards(r_root, capsys):
    from shifts.pack import pack

    shift = get_shift("imagenet-r")
    out = r_root / "wds" / "imagenet-r"
    pack(shift, r_root, out, maxcount=150, progress=False)
    victim = r_root / "imagenet-r" / "n01443537" / "jpeg_0.jpg"
    victim.write_bytes(victim.read_bytes()[:60])
    report = check_shift(shift, r_root, deep=True)
    assert any(
        "1 images cannot be decoded (first: n01443537/jpeg_0.jpg)" in p for p in report.problems
    )
    # the shards are still good; tamper with one byte of the second shard's first image payload
    shard = out / "test" / "1.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = check_shift(shift, r_root, deep=True, form="wds")
    assert any("1.tar: sha256 differs" in p for p in report.problems)


def test_check_data_per_class_counts_for_balanced_sets(tmp_path):
    fixtures.write_imagenetv2(tmp_path)
    report = check_shift(get_shift("imagenetv2"), tmp_path)
    assert report.n == 1000 and report.per_class_expected == 10
    assert "1000 classes without 10 images and 0 classes with none" in report.problems[-1]


class _PluginShift:
    """A third-party shift implementing only harness.api.Shift (no DatasetShift helpers)."""

    def __init__(self):
        from harness.api import ShiftSpec

        self.spec = ShiftSpec(
            "plugin-toy", "1", "user", "toy-2", 2, 3, homepage="https://example.org"
        )

    def examples(self, root, transform=None, split=None):
        from harness.api import Example

        base = root / "plugin-toy"
        if not base.is_dir():
            raise FileNotFoundError(f"plugin-toy not found under {base}")
        for i, y in enumerate([0, 1]):
            yield Example(transform(None) if transform else None, y, f"k{i}", {})


def test_check_data_handles_plain_plugin_shifts(tmp_path, capsys):
    from importlib.metadata import entry_points

    from harness import registry

    with registry.shifts.scoped({"plugin-toy": _PluginShift}):
        names = sorted(ep.name for ep in entry_points(group="shiftbench.shifts")) + ["plugin-toy"]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(registry.shifts, "names", lambda: names)
            assert (
                main(["check-data", "--data-root", str(tmp_path)]) == 0
            )  # absent: fine in a survey
        (tmp_path / "plugin-toy").mkdir()
        assert main(["check-data", "--data-root", str(tmp_path), "plugin-toy", "--json"]) == 2
    rep = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rep["found"] and rep["n"] == 2 and rep["problems"] == ["2 images, expected 3"]


def test_images_pickle_as_plain_decoded_images(r_root):
    import pickle

    from PIL import Image

    ex = next(get_shift("imagenet-r").examples(r_root, lambda img: img))  # still undecoded here
    back = pickle.loads(pickle.dumps(ex.image))
    assert type(back) is Image.Image and back.mode == "RGB" and back.tobytes() == ex.image.tobytes()


def test_check_data_calls_a_good_user_folder_or_webdataset_complete(tmp_path, capsys):
    """A user dataset publishes no size: it was "INCOMPLETE: expected 0" with exit status 2."""
    from harness.cli import main
    from harness.registry import get_shift
    from shifts.pack import pack

    folder = tmp_path / "photos"
    fixtures.write_folder(folder, per_class=2)
    assert main(["check-data", "folder", "--data-root", str(folder)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("8/8 images, 4 classes, 2..2 per class: complete")
    pack(get_shift("folder"), folder, tmp_path / "packed", maxcount=3, progress=False)
    assert main(["check-data", "wds", "--data-root", str(tmp_path / "packed")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("8/8 images, 4 classes, 2..2 per class: complete")
