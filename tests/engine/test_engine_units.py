"""Pieces of the engine on their own: config precedence, back-off, exactly-once, cache keys."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from harness.api import PreprocessSpec
from harness.config import RunConfig, read_config_file, resolve
from harness.engine.cache import ImageCache, cache_key
from harness.engine.distributed import World, check_exactly_once
from harness.engine.predict import BackoffForward
from harness.engine.run import summary_table
from models.wiseft import parse_alphas


def test_precedence_is_defaults_then_file_then_command_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('shifts = ["imagenet", "imagenet-r"]\nbatch_size = 16\nprecision = "bf16"\n')
    config = resolve({"precision": "fp16", "batch_size": None, "workers": 5}, cfg)
    assert config.shifts == ("imagenet", "imagenet-r")  # file
    assert config.batch_size == 16  # file (CLI not given)
    assert config.precision == "fp16"  # CLI beats file
    assert config.workers == 5  # CLI
    assert config.seed == 0  # default
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_config_file_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_sise = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown setting 'batch_sise' \(did you mean 'batch_size'\?\)"):
        read_config_file(bad)
    bad.write_text('batch_size = "many"\n')
    with pytest.raises(ValueError, match="bad.toml: batch_size must be int, got 'many'"):
        read_config_file(bad)
    js = tmp_path / "c.json"
    js.write_text("{not json")
    with pytest.raises(ValueError, match="c.json: not valid JSON"):
        read_config_file(js)
    with pytest.raises(FileNotFoundError, match="missing.toml not found"):
        read_config_file(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        RunConfig(precision="fp64")


def test_cell_hash_follows_what_changes_predictions_only(tmp_path):
    from harness.engine.identity import cell_hash, cell_identity

    def h(config: RunConfig, model: str = "m", shift: str = "imagenet", manifest: str = "d1", root: str = "/data") -> str:
        return cell_hash(cell_identity(config, model, shift, manifest, root))

    base = RunConfig(cache_dir="")
    ref = h(base)
    assert ref == h(dataclasses.replace(base, batch_size=7, workers=0, run_dir="x", models=("z",)))
    assert ref != h(dataclasses.replace(base, precision="bf16"))
    assert ref != h(dataclasses.replace(base, split="val"))
    assert ref != h(dataclasses.replace(base, allow_incomplete=True))
    assert ref != h(base, model="m2") != h(base, shift="imagenet-r")
    assert ref != h(base, manifest="d2")  # other keys or labels read
    assert ref != h(base, root="/other")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    model = json.dumps({"model": "x:y", "options": {"weights": str(weights)}})
    before = h(base, model=model)
    weights.write_bytes(b"two")  # rewritten in place: same path, other contents
    assert h(base, model=model) != before


class FakeOOM:
    """A forward that runs out of memory above ``limit`` images, like a GPU would."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.float().sum(dim=(1, 2, 3), keepdim=False)[:, None].numpy()


def test_out_of_memory_halves_the_batch_and_keeps_every_row():
    fake = FakeOOM(limit=3)
    released = []
    forward = BackoffForward(fake, batch_size=8, on_oom=lambda: released.append(1))
    batch = torch.arange(10 * 3, dtype=torch.uint8).view(10, 3, 1, 1)
    out = forward(batch)
    np.testing.assert_array_equal(out[:, 0], batch.float().sum(dim=(1, 2, 3)).numpy())
    assert forward.batch_size == 2
    assert fake.sizes[:3] == [8, 4, 2] and len(released) == 2
    # The size found is kept: the next batch goes straight to chunks of 2.
    fake.sizes.clear()
    forward(batch[:4])
    assert fake.sizes == [2, 2]


def test_out_of_memory_at_batch_size_one_is_a_clear_error():
    forward = BackoffForward(FakeOOM(limit=0), batch_size=2, on_oom=lambda: None)
    with pytest.raises(ValueError, match="out of GPU memory even at batch size 1"):
        forward(torch.zeros(2, 3, 1, 1, dtype=torch.uint8))


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory():
    def broken(batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        BackoffForward(broken, batch_size=4, on_oom=lambda: None)(torch.zeros(4, 3, 1, 1))


def test_exactly_once_reports_missing_repeated_and_stray_indices():
    check_exactly_once(np.array([2, 0, 1]), 3)
    with pytest.raises(ValueError, match=r"1 missing \(first \[2\]\), 1 repeated \(first \[0\]\), 1 out of range"):
        check_exactly_once(np.array([0, 0, 1, 5]), 3)


def test_gather_on_one_process_orders_rows_by_index():
    idx, logits, agreement = World.single().gather_by_index(np.array([2, 0, 1]), np.array([[2.0], [0.0], [1.0]]), 3, (3, 4, 0.5))
    assert idx.tolist() == [0, 1, 2] and logits[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert agreement == (3, 4, 0.5)


def test_cache_key_follows_geometry_not_normalisation():
    spec = PreprocessSpec(image_size=224, resize_size=224)
    k = cache_key("manifest", spec)
    assert k == cache_key("manifest", dataclasses.replace(spec, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert k != cache_key("manifest", dataclasses.replace(spec, resize_size=256))
    assert k != cache_key("manifest", dataclasses.replace(spec, interpolation="bilinear"))
    assert k != cache_key("other manifest", spec)


def test_an_unfinished_cache_entry_is_never_read(tmp_path):
    cache = ImageCache(tmp_path)
    w = cache.writer("k", 3, 2)
    w.put(np.array([0, 2]), np.ones((2, 3, 2, 2), np.uint8))
    assert w.commit() is False  # row 1 was never written
    assert cache.open("k", 3, 2) is None
    w = cache.writer("k", 3, 2)
    w.put(np.array([0, 1, 2]), np.arange(3 * 12, dtype=np.uint8).reshape(3, 3, 2, 2))
    assert w.commit() is True
    np.testing.assert_array_equal(cache.open("k", 3, 2)[1], np.arange(12, 24).reshape(3, 2, 2))
    assert cache.open("k", 4, 2) is None  # another manifest size: not this entry


def test_alpha_grids():
    assert parse_alphas("0:1:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_alphas("0,0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="every alpha must be in"):
        parse_alphas("0:2:1")
    with pytest.raises(ValueError, match="START:STOP:STEP"):
        parse_alphas("0:1")


def test_summary_table_shows_percent_and_status():
    table = summary_table([{"model": "m", "setting": "imagenet", "status": "new", "n": 10, "top1": 0.5, "images_per_s": 123.4}, {"model": "m", "setting": "imagenet-r", "status": "skipped"}], ("top1",))
    assert table.splitlines() == [
        "model  setting     n   top1   img/s  status",
        "m      imagenet    10  50.00  123    new",
        "m      imagenet-r                    skipped",
    ]


def test_ray_executor_without_ray_is_a_clear_error(monkeypatch):
    import builtins

    from harness.engine.ray_executor import _import_ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match=r"--executor ray needs Ray: pip install 'shiftbench\[ray\]'"):
        _import_ray()


@pytest.mark.parametrize(
    "text,suffix,match",
    [
        ("batch_size = 1e400\n", ".toml", "batch_size must be int, got inf"),
        ("batch_size = 2.5\n", ".toml", "batch_size must be int, got 2.5"),
        ("seed = 99999999999999999999\n", ".toml", r"seed must be an integer in \[0, 4294967295\]"),
        ("agreement_sample = -5\n", ".toml", r"agreement_sample must be an integer in \[1, "),
        ("min_agreement = nan\n", ".toml", "min_agreement must be float, got nan"),
        ('{"batch_size": 8, "batch_size": 64}', ".json", "setting 'batch_size' is given twice"),
    ],
)
def test_config_values_are_range_checked_and_keys_given_once(tmp_path, text, suffix, match):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        resolve({}, path)


def test_out_of_range_command_line_values_are_one_line_errors(tmp_path, capsys):
    from harness.cli import main

    for flag, value in (("--seed", "99999999999999999999"), ("--agreement-sample", "-5"), ("--batch-size", "0")):
        argv = ["run", "--model", "fake:x", "--shifts", "folder", "--data-root", str(tmp_path), "--run-dir", str(tmp_path / "run"), flag, value]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "must be an integer in" in err
    assert not (tmp_path / "run").exists()


def test_a_weights_file_is_hashed_once_for_the_cell_identity_and_the_model(tmp_path, monkeypatch):
    """Planning a cell (its identity names the weights' sha256) and building the model (which
    records it) read one hash of the file: a multi-GB checkpoint is not hashed twice per run."""
    import hashlib

    import harness.files
    from harness.engine.identity import weights_digests
    from models.checkpoints import file_sha256

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights" * 1000)
    made = []
    real = hashlib.sha256
    monkeypatch.setattr(harness.files.hashlib, "sha256", lambda *a: made.append(1) or real(*a))
    digests = weights_digests(json.dumps({"weights": str(weights)}))
    assert digests == {str(weights.resolve()): file_sha256(weights)} and len(made) == 1
    assert file_sha256(weights) == real(weights.read_bytes()).hexdigest()


def test_settings_the_run_would_ignore_are_refused(tmp_path, capsys):
    """--cache-dir next to --no-cache, and the fp32 agreement check's settings on an fp32 run,
    were accepted and did nothing."""
    from harness.cli import main

    base = ["run", "--model", "fake:x", "--shifts", "folder", "--data-root", str(tmp_path), "--run-dir", str(tmp_path / "run")]
    cases = (
        (["--no-cache", "--cache-dir", str(tmp_path / "cache")], f"--no-cache turns the decoded-image cache off, so --cache-dir {tmp_path / 'cache'} would not be used"),
        (["--min-agreement", "0.99"], "--min-agreement sets the check of a reduced precision against fp32, and this run is fp32"),
        (["--precision", "fp32", "--agreement-sample", "8", "--min-agreement", "0.9"], "drop --agreement-sample and --min-agreement, or pass --precision bf16"),
    )
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()
