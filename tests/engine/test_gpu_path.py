"""The CUDA path, proven on the CPU as far as it goes: rank binding, Ray's GPU request, the
batched loader's descriptors, the fp32 agreement pass under the OOM back-off, TF32, resize
fidelity on the arithmetic CUDA runs, and the overlap pipeline. ``torch.cuda`` and
``torch.distributed`` are monkeypatched where a GPU would be needed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_gpu_decode import PatchNet, baseline, pattern, write_folder_dataset

from harness.api import PreprocessSpec
from harness.config import RunConfig
from harness.engine.distributed import World
from harness.engine.gpu_decode import PackedPayloads, pil_resize, tensor_geometry
from harness.engine.pipeline import HostLogits, staged, true_fp32
from harness.engine.run import Engine, ModelSource, RunLog
from harness.engine.store import RunDir
from harness.transforms import resize_and_crop
from shifts.generic import ImageFolderShift

ROOT = Path(__file__).resolve().parents[2]


# -- torchrun / NCCL: each rank on its own GPU ------------------------------------------------


def fake_group(monkeypatch, rank: int, size: int) -> dict:
    import torch.distributed as dist

    calls: dict = {}
    monkeypatch.setenv("WORLD_SIZE", str(size))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: calls.setdefault("init", kw))
    monkeypatch.setattr(dist, "get_rank", lambda *a: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: size)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    return calls


def test_from_env_binds_each_rank_to_its_local_gpu(monkeypatch):
    calls = fake_group(monkeypatch, rank=1, size=2)
    world = World.from_env("cuda")
    assert (world.rank, world.size) == (1, 2)
    assert calls["set_device"] == 1, "every rank would use cuda:0 and NCCL would see one GPU twice"
    assert calls["init"] == {"backend": "nccl", "device_id": torch.device("cuda", 1)}


def test_a_cpu_group_binds_no_gpu(monkeypatch):
    calls = fake_group(monkeypatch, rank=1, size=2)
    World.from_env(torch.device("cpu"))
    assert calls == {"init": {"backend": "gloo"}}


def test_one_process_on_cuda_n_makes_n_current_so_gpu_0_gets_no_context(monkeypatch):
    calls = fake_group(monkeypatch, rank=0, size=1)
    assert World.from_env(torch.device("cuda", 3)) == World.single()
    assert calls == {"set_device": 3}


def test_cuda_n_under_torchrun_is_refused_on_every_rank(monkeypatch):
    calls = fake_group(monkeypatch, rank=0, size=2)
    with pytest.raises(ValueError, match="each rank runs on its own GPU .LOCAL_RANK.; use --device cuda"):
        World.from_env("cuda:0")
    assert calls == {}  # refused before any GPU or process group is touched


def test_the_command_line_binds_the_device_before_anything_runs(monkeypatch, tmp_path, capsys):
    """``shiftbench run --device cuda:1``: the first CUDA call is set_device(1)."""
    from harness.cli import main
    from shifts.fixtures import write_folder

    write_folder(tmp_path / "images", per_class=1)
    order = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: order.append(("set_device", d)))
    import harness.engine.run as run_module

    def spy_run(self, models):
        order.append(("engine", self.config.device))
        raise ValueError("stop")

    monkeypatch.setattr(run_module.Engine, "run", spy_run)
    args = ["run", "--model", "fake:a", "--shifts", "folder", "--data-root", str(tmp_path / "images"), "--run-dir", str(tmp_path / "r"), "--device", "cuda:1"]
    assert main(args) == 2
    assert order == [("set_device", 1), ("engine", "cuda:1")]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(args[:-1] + ["cuda:1"]) == 2
    assert "this machine has 1 CUDA GPU(s); use cuda:0 to cuda:0" in capsys.readouterr().err


# -- Ray: a task on CUDA must ask for a GPU -----------------------------------------------------


def test_ray_tasks_request_a_gpu_when_the_run_is_on_cuda(monkeypatch):
    from harness.engine import ray_executor

    requested = []

    class Remote:
        def __init__(self, fn, **opts):
            self.fn, self.opts = fn, opts

        def options(self, **kw):
            return Remote(self.fn, **{**self.opts, **kw})

        def remote(self, *args):
            requested.append((self.opts, args[0].device))
            return object()

    def remote(fn=None, **opts):
        return Remote(fn, **opts) if fn is not None else (lambda f: Remote(f, **opts))

    gpus = {"GPU": 1.0}
    fake = types.SimpleNamespace(is_initialized=lambda: True, init=lambda **kw: None, remote=remote, get=lambda ref: [],
                                 cluster_resources=lambda: gpus)  # fmt: skip
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: fake)
    for device in ("cuda", "cuda:1", "auto"):
        config = RunConfig(shifts=("x",), run_dir="unused-run-dir", device=device, cache_dir="")
        ray_executor.run_on_ray(config, [ModelSource("m", "m", lambda: None)], RunLog(quiet=True))
    # with num_gpus=0 Ray sets CUDA_VISIBLE_DEVICES="" in the task; inside, cuda is the GPU Ray gave
    # (each run: the task that checks every model's plan, then the model's task)
    assert requested == [({"num_gpus": 1}, "cuda")] * 6
    gpus.clear()
    requested.clear()
    ray_executor.run_on_ray(RunConfig(shifts=("x",), run_dir="d", cache_dir=""), [ModelSource("m", "m", lambda: None)], RunLog(quiet=True))
    assert requested == [({"num_gpus": 0}, "cpu")] * 2
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        ray_executor.run_on_ray(RunConfig(shifts=("x",), run_dir="d", device="cuda", cache_dir=""), [], RunLog(quiet=True))


@pytest.mark.slow
def test_a_real_ray_task_on_cuda_is_given_the_gpu_it_asked_for(tmp_path):
    """A local Ray cluster declaring one (fake) GPU. A task that asked for none would see
    ``CUDA_VISIBLE_DEVICES=''``; ours is given GPU 0, and on this GPU-less machine the engine's
    refusal inside the task shows what the task was given."""
    ray = pytest.importorskip("ray")
    from harness.engine import ray_executor
    from shifts.fixtures import write_folder

    data = tmp_path / "images"
    write_folder(data, per_class=1)
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / "run"), device="cuda", cache_dir="", progress=False)
        with pytest.raises(Exception, match=r"no CUDA GPU is available \(CUDA_VISIBLE_DEVICES='0'\)"):
            ray_executor.run_on_ray(config, [ModelSource("m", "m", lambda: None)], RunLog(quiet=True))
    finally:
        ray.shutdown()


# -- the batched decoder's loader: descriptors per batch, not per image ------------------------

FD_SCRIPT = r"""
import resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from test_gpu_decode import baseline
from harness.api import PreprocessSpec
from harness.engine.distributed import World
from harness.engine.predict import EncodedStream, _collate_payloads, decoded_batches
from shifts.generic import ImageFolderShift
root = Path(sys.argv[1])
for i in range(2048):
    d = root / f"class{i % 4}"; d.mkdir(parents=True, exist_ok=True)
    (d / f"{i:05d}.jpg").write_bytes(baseline(16, 16, i % 7))
stream = EncodedStream(ImageFolderShift(), root, "test", PreprocessSpec(16, 16), World.single())
n = 0
for idx, payloads in decoded_batches(stream, 256, 2, False, _collate_payloads):
    time.sleep(0.05)  # a forward pass: the workers run ahead by prefetch_factor batches
    assert len(payloads.items()) == len(idx)
    n += len(idx)
print("rows", n)
"""


@pytest.mark.slow
def test_batched_decoder_loader_survives_a_1024_fd_limit(tmp_path):
    try:
        out = subprocess.run([sys.executable, "-c", FD_SCRIPT, str(tmp_path / "photos"), str(Path(__file__).parent)],
                             capture_output=True, text=True, timeout=240, cwd=ROOT)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the loader hung (workers died on 'Too many open files')")
    assert out.returncode == 0 and "rows 2048" in out.stdout, out.stderr[-800:]


def test_packed_payloads_give_back_each_payload_in_batch_order():
    jpegs = [torch.frombuffer(bytearray(baseline(16, 16, i)), dtype=torch.uint8) for i in range(3)]
    decoded = [torch.full((3, 8, 8), i, dtype=torch.uint8) for i in range(2)]
    items = [jpegs[0], decoded[0], jpegs[1], jpegs[2], decoded[1]]
    packed = PackedPayloads(items)
    assert len(packed) == 5 and packed.decoded is not None and packed.encoded.ndim == 1
    for got, want in zip(packed.items(), items, strict=True):
        assert torch.equal(got, want)
    assert PackedPayloads([jpegs[0]]).decoded is None and len(PackedPayloads([decoded[0]]).encoded) == 0


# -- the fp32 agreement pass backs off like the main pass ------------------------------------


def test_fp32_agreement_pass_backs_off_like_the_main_pass(tmp_path):
    class SmallGpu(PatchNet):
        def logits(self, images):
            if len(images) > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().logits(images)

    data = write_folder_dataset(tmp_path / "photos")
    config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / "run"), batch_size=8, workers=0,
                       cache_dir="", progress=False, precision="bf16", agreement_sample=8)  # fmt: skip
    net = SmallGpu(f"folder:{data.name}")
    Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])
    (row,) = RunDir(tmp_path / "run").read_results()
    assert row.provenance["batch_size"] == 4 and row.provenance["fp32_agreement_n"] == 8


# -- true fp32 ---------------------------------------------------------------------------------


def test_fp32_cells_run_with_tf32_off_and_leave_the_flags_as_they_were(tmp_path):
    backends = torch.backends
    before = (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision)
    seen = []

    class Spy(PatchNet):
        def logits(self, images):
            seen.append((backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision, backends.cudnn.rnn.fp32_precision))
            return super().logits(images)

    data = write_folder_dataset(tmp_path / "photos")
    config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / "run"), workers=0, cache_dir="", progress=False)
    net = Spy(f"folder:{data.name}")
    Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])
    assert seen and set(seen) == {("ieee", "ieee", "ieee")}
    assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == before
    with pytest.raises(RuntimeError), true_fp32():
        raise RuntimeError("restored on error too")
    assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == before


# -- resize fidelity on the arithmetic a GPU runs ---------------------------------------------

REALISTIC = [(500, 375), (500, 333), (333, 500), (640, 480), (1024, 683), (160, 120), (4000, 3000)]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_tensor_geometry_on_the_cuda_arithmetic_is_within_one_level_of_pil(monkeypatch, interpolation):
    """Off the CPU ``tensor_geometry`` resamples with ``pil_resize`` (integer tensor ops, the
    same on every device): forced here on CPU tensors, photo-sized images, PIL's pixels."""
    import harness.engine.gpu_decode as gpu_decode

    used = []
    monkeypatch.setattr(gpu_decode, "resize_uint8", lambda img, w, h, i: used.append(1) or pil_resize(img, w, h, i))
    spec = PreprocessSpec(image_size=224, resize_size=224, interpolation=interpolation)
    worst = 0
    for seed, (w, h) in enumerate(REALISTIC):
        img = Image.fromarray(pattern(w, h, seed=seed))
        want = np.asarray(resize_and_crop(img, spec), dtype=np.int16)
        got = tensor_geometry(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), spec).permute(1, 2, 0).numpy()
        worst = max(worst, int(np.abs(got.astype(np.int16) - want).max()))
    assert used and worst == 0, f"PIL's arithmetic on tensors differs from PIL by up to {worst} levels"


def test_torchvisions_float_resize_the_gpu_would_otherwise_run_is_levels_off_pil(monkeypatch):
    """Why ``pil_resize`` exists: torchvision's resize off the CPU's uint8 kernel (forced
    here) resamples in float32 and rounds once."""
    import torchvision.transforms.v2.functional._geometry as geo
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    monkeypatch.setattr(geo, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    img = pattern(500, 333, seed=3)
    want = np.asarray(Image.fromarray(img).resize((336, 224), Image.Resampling.BICUBIC), dtype=np.int16)
    got = resize(torch.from_numpy(img.copy()).permute(2, 0, 1), [224, 336], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert np.abs(got.permute(1, 2, 0).numpy().astype(np.int16) - want).max() > 1
    assert torch.equal(pil_resize(torch.from_numpy(img.copy()).permute(2, 0, 1), 336, 224, "bicubic").permute(1, 2, 0),
                       torch.from_numpy(want.astype(np.uint8)))  # fmt: skip


def test_the_cpu_uint8_kernel_is_within_one_level_of_pil_on_photo_sized_images():
    spec = PreprocessSpec(image_size=224, resize_size=224)
    for seed, (w, h) in enumerate(REALISTIC[:5]):
        img = Image.fromarray(pattern(w, h, seed=seed))
        want = np.asarray(resize_and_crop(img, spec), dtype=np.int16)
        got = tensor_geometry(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), spec).permute(1, 2, 0).numpy()
        assert np.abs(got.astype(np.int16) - want).max() <= 1, (w, h)


def test_pil_resize_bounds_its_memory_on_huge_images(monkeypatch):
    import harness.engine.gpu_decode as gpu_decode

    img = torch.from_numpy(pattern(300, 200, seed=1).copy()).permute(2, 0, 1).contiguous()
    whole = pil_resize(img, 120, 80, "bicubic")
    monkeypatch.setattr(gpu_decode, "_TAP_ELEMENTS", 5000)  # many small chunks
    assert torch.equal(pil_resize(img, 120, 80, "bicubic"), whole)


# -- overlap: batches staged off the forward's thread, logits copied back late ---------------


def test_staged_batches_arrive_in_order_while_the_next_is_being_made():
    made: list[int] = []

    def source():
        for i in range(6):
            made.append(i)
            yield np.array([i]), torch.full((1, 3, 2, 2), i, dtype=torch.uint8)

    kept = []
    out = []
    for idx, images in staged(source(), torch.device("cpu"), keep=lambda i, im: kept.append(int(i[0]))):
        time.sleep(0.05)  # a forward pass: the thread makes the next batches meanwhile
        out.append((int(idx[0]), int(images[0, 0, 0, 0])))
        if len(out) == 1:
            assert len(made) >= 2
    assert out == [(i, i) for i in range(6)] and kept == list(range(6))


def test_an_error_while_staging_reaches_the_forwards_thread():
    def source():
        yield np.array([0]), torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
        raise ValueError("image 'x.jpg': cannot decode")

    got = []
    with pytest.raises(ValueError, match="cannot decode"):
        for idx, _ in staged(source(), torch.device("cpu")):
            got.append(int(idx[0]))
    assert got == [0]


def test_a_forward_error_stops_the_staging_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield np.array([i]), torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
        finally:
            closed.set()

    before = threading.active_count()
    batches = staged(source(), torch.device("cpu"))
    for _ in batches:
        break
    batches.close()
    assert closed.wait(5) and threading.active_count() == before


def test_host_logits_keep_batch_order():
    host = HostLogits(torch.device("cpu"))
    assert host.numpy(3).shape == (0, 3)
    host.add(torch.ones(2, 3))
    host.add(torch.zeros(1, 3, dtype=torch.float16))
    np.testing.assert_array_equal(host.numpy(3), np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0]], np.float32))


def test_the_forward_thread_makes_no_per_batch_host_copies(tmp_path, monkeypatch):
    """Logits stay where the forward made them until the cell ends: one conversion per cell."""
    import harness.engine.pipeline as pipeline

    calls = []
    real = pipeline.HostLogits.numpy
    monkeypatch.setattr(pipeline.HostLogits, "numpy", lambda self, width: calls.append(len(self.parts)) or real(self, width))
    data = write_folder_dataset(tmp_path / "photos")
    config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / "run"), batch_size=3, workers=0, cache_dir="", progress=False)
    net = PatchNet(f"folder:{data.name}")
    Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])
    assert calls == [5]  # 14 images in batches of 3, converted once


def test_the_engine_builds_models_on_the_runs_device(tmp_path):
    """Factories learn the run's device (``building_on``) to do build-time work there."""
    from doubles import ColourNet, get_shift, toy_config, write_toy_data

    from harness.api import build_device

    seen = []

    def build():
        seen.append(build_device())
        return ColourNet()

    data = write_toy_data(tmp_path / "data")
    Engine(toy_config(data, run_dir=str(tmp_path / "run"), device="cpu"), get_shift=get_shift).run([ModelSource("c", "c", build)])
    assert seen == ["cpu", "cpu"] and build_device() is None  # the checked build, then the real one


def test_a_run_directory_holds_one_decoder(tmp_path, capsys):
    from harness.cli import main

    data = write_folder_dataset(tmp_path / "photos")
    base = ["run", "--model", "fake:tiny", "--model-arg", "label_space=folder:photos", "--model-arg", "num_classes=5",
            "--shifts", "folder", "--data-root", str(data), "--workers", "0", "--no-cache", "--no-progress",
            "--run-dir", str(tmp_path / "run")]  # fmt: skip
    assert main([*base, "--decoder", "torchvision"]) == 0
    before = (tmp_path / "run" / "results.jsonl").read_bytes()
    config_before = (tmp_path / "run" / "config.json").read_bytes()
    assert main(base) == 2
    assert "holds cells decoded with torchvision:cpu; this run decodes with pil (--decoder auto)" in capsys.readouterr().err
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == before
    assert (tmp_path / "run" / "config.json").read_bytes() == config_before
    assert main([*base, "--decoder", "torchvision"]) == 0  # the same decoder resumes: nothing to redo
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == before


def test_the_forward_leaves_logits_on_the_device_and_batches_arrive_there():
    """``meta`` stands in for cuda: a host copy inside the forward (a per-batch sync on a GPU)
    would fail on it."""
    from harness.engine.predict import make_forward

    device = torch.device("meta")
    net = PatchNet("x").to(device)
    batches = staged(iter([(np.arange(2), torch.zeros(2, 3, 32, 32, dtype=torch.uint8))]), device)
    [(idx, images)] = list(batches)
    assert images.device == device and idx.tolist() == [0, 1]
    out = make_forward(net, device, "fp32")(images)
    assert out.device == device and out.shape == (2, 5)


def test_a_cuda_n_cell_makes_n_the_current_device(monkeypatch):
    from harness.engine import pipeline

    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda d: entered.append(d) or __import__("contextlib").nullcontext())
    with pipeline.current_device(torch.device("cuda", 2)):
        pass
    with pipeline.current_device(torch.device("cpu")):
        pass
    assert entered == [torch.device("cuda", 2)]


def test_where_torchvision_would_resize_in_float_pils_arithmetic_runs_instead(monkeypatch):
    """torchvision takes its float path for bilinear on CPUs without AVX2 (and always on CUDA):
    forced here, ``tensor_geometry`` still gives PIL's pixels."""
    import torchvision.transforms.v2.functional._geometry as geo

    monkeypatch.setattr(geo, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    for interpolation in ("bicubic", "bilinear"):
        spec = PreprocessSpec(image_size=224, resize_size=224, interpolation=interpolation)
        img = Image.fromarray(pattern(500, 333, seed=5))
        want = np.asarray(resize_and_crop(img, spec))
        got = tensor_geometry(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), spec).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, want)
