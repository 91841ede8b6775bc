"""Images rewritten in place under their old names are other data: the decoded-image cache and
a done cell must not hand back the old images' numbers (a real timm ResNet on a user folder,
through the command line)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import Predictions
from harness.cli import main
from harness.engine.cache import cache_key
from harness.engine.predict import read_manifest
from harness.engine.store import RunDir
from harness.files import file_stamp
from shifts import wds
from shifts.generic import ImageFolderShift, WebDatasetShift

CLASSES = ("cat", "dog", "eel")
MODEL = "timm:resnet18"


def random_bmp(path: Path, seed: int) -> None:
    """A 40x48 BMP of random pixels: every such file has the same size, whatever its pixels."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, format="BMP")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=len(CLASSES), pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    images = tmp_path / "images"
    for c, name in enumerate(CLASSES):
        (images / name).mkdir(parents=True)
        for i in range(2):
            random_bmp(images / name / f"{i}.bmp", 10 * c + i)
    return images


def run(folder: Path, run_dir: Path, *extra: str) -> int:
    args = ["run", "--model", MODEL, "--model-arg", f"weights={folder.parent / 'r18.safetensors'}",
            "--model-arg", f"num_classes={len(CLASSES)}", "--model-arg", "label_space=folder:images",
            "--shifts", "folder", "--data-root", str(folder), "--run-dir", str(run_dir),
            "--workers", "0", "--no-progress", *extra]  # fmt: skip
    return main(args)


def logits(run_dir: Path) -> np.ndarray:
    return Predictions.load(RunDir(run_dir).predictions_path(MODEL, "folder")).logits


def rewrite_keeping_size(path: Path, seed: int) -> None:
    """New pixels in a file of the same size, its modification time one second on (as on a file
    system that keeps whole seconds only)."""
    before = os.stat(path)
    random_bmp(path, seed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert os.stat(path).st_size == before.st_size


def test_the_image_cache_never_serves_an_image_rewritten_in_place(folder, tmp_path):
    cache = str(tmp_path / "cache")
    assert run(folder, tmp_path / "first", "--cache-dir", cache) == 0
    for c, name in enumerate(CLASSES):
        for i in range(2):
            rewrite_keeping_size(folder / name / f"{i}.bmp", 100 + 10 * c + i)
    assert run(folder, tmp_path / "cached", "--cache-dir", cache) == 0
    assert run(folder, tmp_path / "uncached", "--no-cache") == 0
    assert not np.array_equal(logits(tmp_path / "first"), logits(tmp_path / "uncached"))  # the data did change
    np.testing.assert_array_equal(logits(tmp_path / "cached"), logits(tmp_path / "uncached"))  # was: the old images'


def test_a_done_cell_runs_again_when_an_image_is_rewritten_in_place(folder, tmp_path, capsys):
    assert run(folder, tmp_path / "run", "--no-cache") == 0
    assert run(folder, tmp_path / "run", "--no-cache") == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[-1] == "skipped"
    rewrite_keeping_size(folder / "dog" / "1.bmp", 999)
    assert run(folder, tmp_path / "run", "--no-cache") == 0
    assert "changed: the image files (rewritten, replaced or touched since" in capsys.readouterr().err
    assert run(folder, tmp_path / "fresh", "--no-cache") == 0
    np.testing.assert_array_equal(logits(tmp_path / "run"), logits(tmp_path / "fresh"))


def test_a_chmod_or_a_copy_that_keeps_times_keeps_the_done_cell(folder, tmp_path, capsys):
    """The identity is size and modification time: a ``chmod`` and a copy of the data that
    keeps times (``rsync -a``, ``cp -p``: each node's own copy under one path) move only the
    change time and inode, and must not rerun every cell."""
    import shutil

    assert run(folder, tmp_path / "run", "--no-cache") == 0
    before = logits(tmp_path / "run")
    os.chmod(folder / "cat" / "0.bmp", 0o600)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # copy2: times kept, new inodes
    shutil.rmtree(folder)
    copy.rename(folder)
    capsys.readouterr()
    assert run(folder, tmp_path / "run", "--no-cache") == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[-1].split()[-1] == "skipped", out.err
    np.testing.assert_array_equal(logits(tmp_path / "run"), before)


def test_a_rewritten_shard_changes_the_manifest_files_and_the_cache_key(tmp_path):
    from harness.api import PreprocessSpec

    root = tmp_path / "shards"
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png)
    sample = wds.ShardSample("s0", 0, png.read_bytes(), "png")
    wds.write_split(root, "test", [sample], ["a", "b"], ["a photo of a {c}."])
    shift = WebDatasetShift()
    before = read_manifest(shift, root, "test")
    assert before.files
    shard = root / "test" / "0.tar"
    stamp = file_stamp(shard)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(png)
    wds.write_split(root / "again", "test", [wds.ShardSample("s0", 0, png.read_bytes(), "png")], ["a", "b"], [])
    st = os.stat(shard)
    (root / "again" / "test" / "0.tar").replace(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = read_manifest(shift, root, "test")
    assert file_stamp(shard) != stamp
    assert after.digest() == before.digest()  # same keys and labels...
    assert after.files != before.files  # ...but not the same files
    spec = PreprocessSpec(image_size=8, resize_size=8)
    assert cache_key(after.digest(), spec, "pil", after.files) != cache_key(before.digest(), spec, "pil", before.files)


def test_folder_manifest_files_follow_each_image_file(tmp_path):
    images = tmp_path / "images"
    for name in CLASSES:
        (images / name).mkdir(parents=True)
        random_bmp(images / name / "0.bmp", 1)
    shift = ImageFolderShift()
    first = read_manifest(shift, images, "test")
    assert read_manifest(shift, images, "test").files == first.files  # reading changes nothing
    rewrite_keeping_size(images / "eel" / "0.bmp", 2)
    assert read_manifest(shift, images, "test").files != first.files


@pytest.mark.parametrize("workers", [0, 2])
def test_data_that_changes_between_the_manifest_and_the_images_stops_the_cell(folder, workers):
    """The image pass lists the data again: one image gone from ``cat`` and one come to ``dog``
    (a sync still running) keeps the count, and moved ``dog/0.bmp``'s logits onto
    ``cat/1.bmp``'s key and label, with nothing said."""
    from harness.engine.predict import PredictOptions, predict
    from models.timm_models import timm

    classifier = timm("resnet18", weights=str(folder.parent / "r18.safetensors"), num_classes=str(len(CLASSES)),
                      label_space="folder:images")
    shift = ImageFolderShift()
    manifest = read_manifest(shift, folder, "test")
    (folder / "cat" / "1.bmp").unlink()
    random_bmp(folder / "dog" / "00.bmp", 5)
    options = PredictOptions(batch_size=2, workers=workers, device="cpu", progress=False)
    # the first worker to reach a moved example names it: with one process, example 1
    first = r"example 1 is now 'dog/0.bmp', but the manifest read before it holds 'cat/1.bmp' there"
    with pytest.raises(ValueError, match="the data changed while this cell ran: " + (first if workers == 0 else "")):
        predict(classifier, "r18", shift, manifest, folder, options)
    with pytest.raises(ValueError, match="the data changed while this cell ran"):  # --skip-bad-images does not hide it
        predict(classifier, "r18", shift, manifest, folder, dataclasses.replace(options, skip_bad_images=True))


def scored_rows(data: Path, run_dir: Path, shift: str, model: str, *model_args: str) -> dict[str, tuple]:
    """``shiftbench run`` of one model on ``shift`` (fixture-sized: --allow-incomplete); its rows
    as setting -> (n, metrics, class map, group counts, n_expected)."""
    args = ["run", "--model", model, *(a for arg in model_args for a in ("--model-arg", arg)), "--shifts", shift,
            "--data-root", str(data), "--run-dir", str(run_dir), "--allow-incomplete", "--workers", "0",
            "--no-cache", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return {r.setting: (r.n, r.metrics, r.class_map, r.group_counts, r.n_expected) for r in RunDir(run_dir).read_results()}


# a one-layer open_clip ViT on 32 px images: the real architecture, fast on a CPU
TINY_CLIP = {"quick_gelu": False, "embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}  # fmt: skip


def test_objectnet_rows_follow_the_mapping_files_the_data_has_now(tmp_path, capsys):
    """ObjectNet's class map is read from the dataset's own mappings/: after they changed, a rerun
    said "skipped" and kept the rows scored through the old map, while a fresh run directory
    scored the new one."""
    import json

    from safetensors.torch import save_file

    from models.clip import create_open_clip, register_config
    from shifts import fixtures

    data = tmp_path / "data"
    fixtures.write_imagenet_val(data)
    fixtures.write_objectnet(data)
    config = tmp_path / "tiny-on-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    visual = {k: v.contiguous() for k, v in create_open_clip(register_config(config)).state_dict().items() if k.startswith("visual.")}
    head = {"classification_head.weight": torch.randn(1000, 16, generator=torch.Generator().manual_seed(1)),
            "classification_head.bias": torch.zeros(1000)}  # fmt: skip
    save_file(visual | head, str(tmp_path / "ft.safetensors"))

    def run_on(run_dir: Path) -> dict[str, tuple]:
        return scored_rows(data, run_dir, "objectnet", "finetuned:tiny-on-clip", f"config={config}",
                           f"weights={tmp_path / 'ft.safetensors'}")

    before = run_on(tmp_path / "run")
    mappings = data / "objectnet-1.0" / "mappings"
    on_to_in = json.loads((mappings / "objectnet_to_imagenet_1k.json").read_text())
    names = [line.strip() for line in (mappings / "imagenet_to_label_2012_v2").read_text().splitlines()]
    used = {n for joined in on_to_in.values() for n in joined.split("; ")}
    free = [n for n in names if n not in used and names.count(n) == 1]
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps(dict(zip(sorted(on_to_in), free, strict=False))))
    capsys.readouterr()
    after = run_on(tmp_path / "run")
    assert "the class map of objectnet changes (the data's mapping files), scored again" in capsys.readouterr().err
    fresh = run_on(tmp_path / "fresh")
    assert after == fresh  # was: the rows of the old map
    assert after["objectnet"][2] != before["objectnet"][2]
    assert after["imagenet@objectnet"][0] == 113  # the view now has one ImageNet class per ObjectNet class
    # views of the incomplete ImageNet (1 image per class) are incomplete: 50 per ImageNet class
    assert (before["imagenet@objectnet"][4], after["imagenet@objectnet"][4]) == (50 * 125, 50 * 113)


def test_wilds_rows_follow_the_metadata_the_data_has_now(tmp_path, capsys):
    """FMoW's regions come from its country table: after France moved from Europe to Asia there,
    a rerun said "skipped" and kept the rows grouped by the old regions (the official metric is
    the worst region's accuracy), while a fresh run directory grouped by the new ones."""
    import timm as timm_lib
    from safetensors.torch import save_file

    from shifts import fixtures

    data = tmp_path / "data"
    fixtures.write_fmow(data)
    torch.manual_seed(0)
    net = timm_lib.create_model("resnet18", num_classes=62, pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))

    def run_on(run_dir: Path) -> dict[str, tuple]:
        return scored_rows(data, run_dir, "fmow", MODEL, f"weights={tmp_path / 'r18.safetensors'}", "num_classes=62",
                           "label_space=fmow-62")

    before = run_on(tmp_path / "run")
    table = data / "fmow_v1.1" / "country_code_mapping.csv"
    assert "France,FR,FRA,Europe" in table.read_text()
    table.write_text(table.read_text().replace("France,FR,FRA,Europe", "France,FR,FRA,Asia"))
    capsys.readouterr()
    after = run_on(tmp_path / "run")
    assert "changed: the data (keys, labels or metadata read)" in capsys.readouterr().err
    assert after == run_on(tmp_path / "fresh")  # was: the rows of the old regions
    assert "region=Europe" in before["fmow"][3] and "region=Europe" not in after["fmow"][3]


def test_a_names_head_from_objectnet_mappings_follows_the_names_they_hold_now(tmp_path, capsys):
    """``classnames=objectnet:DIR`` builds the zero-shot head from DIR's mapping files, but only the
    option's text was part of the cell's identity: after the labels there changed, a rerun said
    "skipped" and kept the numbers of the old head."""
    import json

    from safetensors.torch import save_file

    from models.clip import create_open_clip, register_config
    from shifts import fixtures

    data = tmp_path / "data"
    fixtures.write_objectnet(data)
    config = tmp_path / "tiny-names-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in create_open_clip(register_config(config)).state_dict().items()},
              str(tmp_path / "zs.safetensors"))
    mappings = data / "objectnet-1.0" / "mappings"

    def run_on(run_dir: Path) -> dict[str, tuple]:
        return scored_rows(data, run_dir, "objectnet-names", "clip:tiny-names-clip", f"config={config}",
                           f"weights={tmp_path / 'zs.safetensors'}", f"classnames=objectnet:{mappings}",
                           "templates=simple-imagenet-7", "label_space=objectnet-113")

    before = run_on(tmp_path / "run")
    folder_to_label = json.loads((mappings / "folder_to_objectnet_label.json").read_text())
    on_to_in = json.loads((mappings / "objectnet_to_imagenet_1k.json").read_text())
    renamed = {label: f"{label} seen from above" for label in on_to_in}  # every overlapping class renamed
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps({f: renamed.get(x, x) for f, x in folder_to_label.items()}))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps({renamed[x]: m for x, m in on_to_in.items()}))
    capsys.readouterr()
    after = run_on(tmp_path / "run")
    assert "changed: the contents of" in capsys.readouterr().err
    assert after == run_on(tmp_path / "fresh")  # was: the rows of the old names' head
    assert after != before


def test_an_ensemble_of_members_predicted_on_different_images_is_refused(folder, tmp_path):
    """Members are matched by key and label, which images rewritten in place between two members'
    runs keep: the ensemble averaged logits of the old images with logits of the new ones."""
    from harness.engine.ensemble import ensemble_run_dir

    run_dir = tmp_path / "run"
    assert run(folder, run_dir, "--no-cache", "--model-arg", "label=old") == 0
    rewrite_keeping_size(folder / "cat" / "0.bmp", 77)
    assert run(folder, run_dir, "--no-cache", "--model-arg", "label=new") == 0
    with pytest.raises(ValueError, match=r"old and new were predicted on folder from different data .* rerun `shiftbench run`"):
        ensemble_run_dir(RunDir(run_dir), ["old", "new"])
    assert main(["ensemble", str(run_dir), "--members", "old,new"]) == 2  # one line, nothing written
    assert {r.model for r in RunDir(run_dir).read_results()} == {"old", "new"}


def test_two_models_predicted_on_other_images_are_not_compared(folder, tmp_path, capsys):
    """``compare`` pairs two models image by image by key: a model predicted before the images
    were rewritten and one predicted after share every key, and their difference was reported
    as if over the same images."""
    assert run(folder, tmp_path / "run", "--no-cache") == 0
    rewrite_keeping_size(folder / "dog" / "1.bmp", 999)
    assert run(folder, tmp_path / "run", "--no-cache", "--model-arg", "label=later") == 0
    capsys.readouterr()
    args = ["compare", str(tmp_path / "run"), "--models", f"{MODEL},later", "--no-testbed", "--bootstrap", "100",
            "--data-root", str(folder)]  # fmt: skip
    assert main(args) == 2
    assert f"{MODEL} and later were predicted on folder from different data" in capsys.readouterr().err
    assert run(folder, tmp_path / "run", "--no-cache") == 0  # the stale cell runs again
    assert main(args) == 0, capsys.readouterr().err
