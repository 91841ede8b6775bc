"""Batched JPEG decoding (``harness.engine.gpu_decode``), run on the CPU: the code a CUDA run uses,
checked against the PIL path on fixture files, with PIL fallbacks for what it cannot take."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import Classifier, LazyExample, Predictions, PreprocessSpec
from harness.config import RunConfig
from harness.engine.cache import cache_key
from harness.engine.gpu_decode import (
    BatchDecoder,
    choose_decoder,
    jpeg_fallback_reason,
    tensor_geometry,
    worker_payload,
)
from harness.engine.run import Engine, ModelSource
from harness.engine.store import RunDir
from harness.transforms import geometry, resize_and_crop
from shifts.generic import ImageFolderShift

SPEC = PreprocessSpec(image_size=32, resize_size=32)


def pattern(w: int, h: int, seed: int) -> np.ndarray:
    """Blocky colour noise plus grain: JPEG-like content with real edges to resample."""
    rng = np.random.default_rng(seed)
    low = rng.random((h // 8 + 1, w // 8 + 1, 3))
    return (np.kron(low, np.ones((8, 8, 1)))[:h, :w] * 200 + rng.random((h, w, 3)) * 55).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def baseline(w: int, h: int, seed: int) -> bytes:
    return encode(Image.fromarray(pattern(w, h, seed)), quality=90)


# One file per case the decoder must route; name -> (bytes, fallback reason or None).
def fixture_files() -> dict[str, tuple[bytes, str | None]]:
    rgb = Image.fromarray(pattern(48, 40, 9))
    jpeg = baseline(48, 40, 9)
    return {
        "wide.jpg": (baseline(64, 48, 1), None),
        "tall.jpg": (baseline(40, 56, 2), None),
        "small.jpg": (baseline(24, 20, 3), None),  # upscaled
        "gray.jpg": (encode(rgb.convert("L"), quality=90), "grayscale"),
        "cmyk.jpg": (encode(rgb.convert("CMYK"), quality=90), "CMYK/YCCK"),
        "progressive.jpg": (encode(rgb, quality=90, progressive=True), "progressive"),
        "photo.png": (encode(rgb, "PNG"), "not a JPEG"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "no end-of-image marker (truncated or trailing data)"),
    }


def test_only_complete_baseline_ycbcr_jpegs_go_to_the_batched_decoder():
    for name, (data, reason) in fixture_files().items():
        assert jpeg_fallback_reason(data) == reason, name
    # Zero padding after the end-of-image marker is harmless; an Adobe RGB-coded frame is not.
    assert jpeg_fallback_reason(baseline(16, 16, 0) + b"\x00\x00") is None
    adobe_rgb = bytearray(baseline(16, 16, 0))
    app14 = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # transform byte (last) = 0: RGB
    adobe_rgb[2:2] = app14
    assert jpeg_fallback_reason(bytes(adobe_rgb)) == "RGB-coded (Adobe transform 0)"
    twelve_bit = bytearray(baseline(16, 16, 0))
    sof = twelve_bit.index(b"\xff\xc0")
    twelve_bit[sof + 4] = 12
    assert jpeg_fallback_reason(bytes(twelve_bit)) == "12-bit samples"


@pytest.mark.parametrize(
    "spec, size",
    [
        (SPEC, (64, 48)),  # downscale the shorter side, crop the longer
        (SPEC, (40, 56)),
        (SPEC, (24, 20)),  # upscale
        (PreprocessSpec(image_size=32, resize_size=32, interpolation="bilinear"), (64, 48)),
        (PreprocessSpec(image_size=32, resize_size=40, resize_mode="squash"), (64, 48)),
        (PreprocessSpec(image_size=32, resize_size=24), (64, 48)),  # crop larger than the image: padded
        (PreprocessSpec(image_size=32, resize_size=31), (31, 40)),  # 1 px short: PIL crops in black
        (PreprocessSpec(image_size=32, resize_size=32, crop="none", resize_mode="squash"), (40, 24)),
    ],
)
def test_tensor_geometry_matches_the_pil_transform_within_one_level(spec, size):
    img = Image.fromarray(pattern(*size, seed=size[0]))
    expected = np.asarray(resize_and_crop(img, spec), dtype=np.int16)
    got = tensor_geometry(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), spec)
    assert got.dtype == torch.uint8
    got = got.permute(1, 2, 0).numpy().astype(np.int16)
    assert got.shape == expected.shape
    # Identical sizes, offsets and black padding; resampling within one level of PIL's.
    assert np.abs(got - expected).max() <= 1
    black = expected.sum(axis=2) == 0
    np.testing.assert_array_equal(got[black], 0)


def test_batch_decoder_matches_pil_and_falls_back_per_image(tmp_path):
    files = fixture_files()
    del files["truncated.jpg"]
    pil = geometry(SPEC)
    examples = []
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
        path = tmp_path / name
        examples.append(LazyExample(name, 0, {}, lambda p=path: Image.open(p).convert("RGB"), path.read_bytes))
    payloads = [worker_payload(ex, pil) for ex in examples]
    # Baseline JPEGs travel as bytes; the rest arrive decoded by PIL in the worker.
    assert [p.ndim for p in payloads] == [1, 1, 1, 3, 3, 3, 3]
    decoder = BatchDecoder(SPEC, torch.device("cpu"), [ex.key for ex in examples])
    kept, batch = decoder(np.arange(len(payloads)), payloads)
    assert kept.tolist() == list(range(len(files))) and decoder.failures == []
    assert batch.shape == (len(files), 3, 32, 32) and batch.dtype == torch.uint8
    assert (decoder.on_device, decoder.with_pil) == (3, 4)
    expected = torch.stack([pil(ex.load()) for ex in examples])
    diff = (batch.int() - expected.int()).abs()
    assert diff[:3].max() <= 1  # libjpeg-turbo either way; resampling within one level
    assert diff[3:].max() == 0  # the PIL path itself


def test_an_image_the_decoder_refuses_is_decoded_with_pil_in_the_main_process(monkeypatch):
    from harness.engine import gpu_decode

    good, bad = baseline(64, 48, 1), baseline(40, 56, 2)
    real = gpu_decode.decode_jpegs

    def refuse_second(data, device):
        return [real(data[:1], device)[0], None]

    monkeypatch.setattr(gpu_decode, "decode_jpegs", refuse_second)
    decoder = BatchDecoder(SPEC, torch.device("cpu"), ["a", "b"])
    payloads = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (good, bad)]
    kept, batch = decoder(np.arange(2), payloads)
    assert kept.tolist() == [0, 1] and (decoder.on_device, decoder.with_pil) == (1, 1)
    np.testing.assert_array_equal(batch[1].numpy(), geometry(SPEC)(Image.open(io.BytesIO(bad))).numpy())


def bogus_sampling_factors() -> bytes:
    """A baseline JPEG header that passes the sniff, but whose frame says a component has
    sampling factors 0: torchvision's decoder and PIL both refuse it."""
    data = bytearray(baseline(64, 48, 1))
    sof = data.index(b"\xff\xc0")
    data[sof + 11] = 0x00  # first component's HiVi byte
    return bytes(data)


def test_an_image_neither_decoder_reads_is_left_out_and_reported():
    bogus = bogus_sampling_factors()
    assert jpeg_fallback_reason(bogus) is None
    decoder = BatchDecoder(SPEC, torch.device("cpu"), ["a", "b", "c"])
    payloads = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (baseline(64, 48, 1), bogus, baseline(40, 56, 2))]
    kept, batch = decoder(np.array([10, 11, 12]) - 10, payloads)
    assert kept.tolist() == [0, 2] and batch.shape == (2, 3, 32, 32)
    assert (decoder.on_device, decoder.with_pil) == (2, 0)
    [(index, message)] = decoder.failures
    assert index == 1 and message.startswith("image 'b': cannot decode (OSError: ")


def test_auto_keeps_pil_until_the_batched_decoders_top1_effect_is_measured():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert choose_decoder("auto", cuda, SPEC, "m") == "pil"  # nvJPEG vs PIL top-1: unmeasured (docs/engine.md)
    assert choose_decoder("auto", cpu, SPEC, "m") == "pil"
    assert choose_decoder("pil", cuda, SPEC, "m") == "pil"
    assert choose_decoder("torchvision", cpu, SPEC, "m") == "torchvision"
    assert choose_decoder("torchvision", cuda, SPEC, "m") == "torchvision"
    lanczos = PreprocessSpec(image_size=32, resize_size=32, interpolation="lanczos")
    assert choose_decoder("auto", cuda, lanczos, "m") == "pil"
    with pytest.raises(ValueError, match="model 'm' uses 'lanczos'; use --decoder pil or auto"):
        choose_decoder("torchvision", cpu, lanczos, "m")


def test_the_decoder_and_its_fidelity_are_part_of_the_cell_identity():
    from harness.engine.gpu_decode import decoder_fidelity, planned_decoder

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    labels = [planned_decoder(d, dev) for d in ("auto", "pil", "torchvision") for dev in (cpu, cuda)]
    assert labels == ["pil", "pil", "pil", "pil", "torchvision:cpu", "torchvision:cuda"]
    assert [decoder_fidelity(x) for x in ("pil", "torchvision:cpu", "torchvision:cuda")] == ["exact-pil", "libjpeg-turbo", "nvjpeg"]
    from harness.engine.identity import cell_hash, cell_identity

    config = RunConfig(cache_dir="")
    hashes = {cell_hash(cell_identity(config, "m", "s", "digest", "/data", label)) for label in ("pil", "torchvision:cpu", "torchvision:cuda")}
    assert len(hashes) == 3


def test_cache_entries_never_mix_decoders():
    pil = cache_key("digest", SPEC)
    assert pil == cache_key("digest", SPEC, "pil")
    assert len({pil, cache_key("digest", SPEC, "torchvision:cpu"), cache_key("digest", SPEC, "torchvision:cuda")}) == 3


# -- through the engine, on the generic ImageFolder reader ------------------------------------


class PatchNet(torch.nn.Module, Classifier):
    """A fixed random linear layer on 4x4 average-pooled pixels: sensitive to content, tiny."""

    def __init__(self, label_space: str, num_classes: int = 5, name: str = "patch-net") -> None:
        super().__init__()
        self.name, self.label_space, self.num_classes = name, label_space, num_classes
        self.preprocess_spec = SPEC
        generator = torch.Generator().manual_seed(0)
        self.fc = torch.nn.Linear(3 * 4 * 4, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(num_classes, 48, generator=generator))
            self.fc.bias.zero_()

    def logits(self, images):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1))


def write_folder_dataset(root: Path) -> Path:
    """ImageFolder layout, 5 classes (the folder shift scores top-5): 10 baseline JPEGs plus a
    grayscale, a CMYK, a progressive JPEG and a PNG (the fallbacks)."""
    files = fixture_files()
    for i in range(10):
        d = root / f"class{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = [(64, 48), (40, 56), (48, 48), (36, 60)][i % 4]
        (d / f"img{i:02d}.jpg").write_bytes(baseline(w, h, 100 + i))
    for i, name in enumerate(["gray.jpg", "cmyk.jpg", "progressive.jpg", "photo.png"]):
        (root / f"class{i}" / name).write_bytes(files[name][0])
    return root


def run_folder(tmp_path: Path, data: Path, run_dir: str, decoder: str, workers: int = 0) -> Predictions:
    config = RunConfig(
        shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / run_dir), batch_size=5,
        workers=workers, cache_dir=str(tmp_path / "cache"), progress=False, decoder=decoder,
    )  # fmt: skip
    net = PatchNet(f"folder:{data.name}")
    Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])
    return Predictions.load(RunDir(tmp_path / run_dir).predictions_path(net.name, "folder"))


def test_engine_with_the_batched_decoder_agrees_with_pil_and_records_it(tmp_path):
    data = write_folder_dataset(tmp_path / "photos")
    pil = run_folder(tmp_path, data, "pil", "auto")  # auto on CPU is PIL
    batched = run_folder(tmp_path, data, "tv", "torchvision", workers=2)
    assert batched.keys.tolist() == pil.keys.tolist() and len(pil) == 14
    np.testing.assert_array_equal(batched.logits.argmax(1), pil.logits.argmax(1))
    assert np.abs(batched.logits.astype(np.float32) - pil.logits.astype(np.float32)).max() < 0.05

    rows = {r.model: r for r in RunDir(tmp_path / "tv").read_results()}
    assert (rows["patch-net"].n, rows["patch-net"].n_expected) == (14, 14)  # size completed from the folders
    prov = rows["patch-net"].provenance
    assert (prov["decoder"], prov["source"]) == ("torchvision:cpu", "decode")
    assert prov["decoder_fidelity"] == "libjpeg-turbo" and rows["patch-net"].protocol["decoder"] == "libjpeg-turbo"
    pil_row = RunDir(tmp_path / "pil").read_results()[0]
    assert pil_row.provenance["decoder_fidelity"] == "exact-pil" and "decoder" not in pil_row.protocol
    assert (prov["decoded_on_device"], prov["decoded_with_pil"]) == (10, 4)
    assert RunDir(tmp_path / "pil").read_results()[0].provenance["decoder"] == "pil"
    # Each decoder filled its own cache entry; a second batched run reads its entry.
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2
    again = run_folder(tmp_path, data, "tv2", "torchvision")
    assert again.sha256() == batched.sha256()
    prov = RunDir(tmp_path / "tv2").read_results()[0].provenance
    assert (prov["decoder"], prov["source"]) == ("torchvision:cpu", "cache")


class BorderedFolder(ImageFolderShift):
    border_crop = 2  # as ObjectNet: the image changes after decoding


def test_readers_offer_file_bytes_only_when_decoding_is_all_there_is(tmp_path):
    data = write_folder_dataset(tmp_path / "photos")
    examples = list(ImageFolderShift().lazy_examples(data))
    assert [ex.key for ex in examples] == [ex.key for ex in ImageFolderShift().examples(data)]
    ex = {e.key: e for e in examples}["class0/img00.jpg"]
    assert ex.encoded() == (data / ex.key).read_bytes()
    np.testing.assert_array_equal(np.asarray(ex.load()), np.asarray(Image.open(data / ex.key).convert("RGB")))

    bordered = {e.key: e for e in BorderedFolder().lazy_examples(data)}["class0/img00.jpg"]
    assert bordered.encoded is None
    assert bordered.load().size == (64 - 4, 48 - 4)


def test_webdataset_shards_feed_the_batched_decoder_their_jpeg_samples(tmp_path):
    from shifts import wds
    from shifts.generic import WebDatasetShift

    webp = encode(Image.fromarray(pattern(48, 40, 5)), "WEBP")
    samples = [wds.ShardSample(f"s{i:07d}", i % 2, baseline(64, 48, 200 + i), "jpg") for i in range(5)]
    samples.append(wds.ShardSample("s0000005", 1, webp, "webp"))
    data = tmp_path / "shards"
    wds.write_split(data, "test", samples, ["cat", "dog"], ["a photo of a {c}."], maxcount=4)
    examples = list(WebDatasetShift().lazy_examples(data))
    assert [ex.encoded() for ex in examples] == [s.image for s in samples]

    def run(run_dir: str, decoder: str) -> Predictions:
        config = RunConfig(shifts=("wds",), data_root=str(data), run_dir=str(tmp_path / run_dir), batch_size=4,
                           workers=0, cache_dir="", progress=False, decoder=decoder)  # fmt: skip
        net = PatchNet(f"wds:{data.name}", num_classes=2)
        Engine(config, get_shift=lambda name: WebDatasetShift()).run([ModelSource(net.name, net.name, lambda: net)])
        return Predictions.load(RunDir(tmp_path / run_dir).predictions_path(net.name, "wds"))

    pil, batched = run("pil", "pil"), run("tv", "torchvision")
    np.testing.assert_array_equal(batched.logits.argmax(1), pil.logits.argmax(1))
    prov = RunDir(tmp_path / "tv").read_results()[0].provenance
    assert (prov["decoded_on_device"], prov["decoded_with_pil"]) == (5, 1)


def test_the_decoder_flag_reaches_the_cell_and_is_recorded(tmp_path, capsys):
    from harness.cli import main

    data = write_folder_dataset(tmp_path / "photos")
    base = ["run", "--model", "fake:tiny", "--model-arg", "label_space=folder:photos", "--model-arg", "num_classes=5",
            "--shifts", "folder", "--data-root", str(data), "--workers", "0", "--no-cache", "--no-progress"]  # fmt: skip
    assert main([*base, "--run-dir", str(tmp_path / "tv"), "--decoder", "torchvision"]) == 0
    assert main([*base, "--run-dir", str(tmp_path / "auto")]) == 0
    assert RunDir(tmp_path / "tv").read_results()[0].provenance["decoder"] == "torchvision:cpu"
    assert RunDir(tmp_path / "auto").read_results()[0].provenance["decoder"] == "pil"
    config = tmp_path / "run.toml"
    config.write_text('decoder = "nvjpeg"\n')
    assert main([*base, "--run-dir", str(tmp_path / "bad"), "--config", str(config)]) == 2
    assert not (tmp_path / "bad").exists()
    assert "decoder must be one of auto, pil, torchvision, got 'nvjpeg'" in capsys.readouterr().err


def test_skip_bad_images_covers_images_the_batched_path_cannot_read(tmp_path):
    def evaluate(data: Path, run_dir: str, **kw) -> None:
        config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / run_dir), batch_size=4,
                           workers=2, cache_dir="", progress=False, decoder="torchvision", **kw)  # fmt: skip
        net = PatchNet(f"folder:{data.name}")
        Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])

    clean = write_folder_dataset(tmp_path / "clean" / "photos")
    evaluate(clean, "reference")
    (reference,) = RunDir(tmp_path / "reference").read_results()
    data = write_folder_dataset(tmp_path / "photos")
    (data / "class2" / "zz_bogus.jpg").write_bytes(bogus_sampling_factors())
    with pytest.raises(ValueError) as err:
        evaluate(data, "run")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("image 'class2/zz_bogus.jpg': cannot decode (OSError: ")
    assert str(err.value).endswith("pass --skip-bad-images to leave such images out (each is recorded and counted in the results)")

    evaluate(data, "run", skip_bad_images=True)
    (row,) = RunDir(tmp_path / "run").read_results()
    assert (row.n, row.n_expected) == (14, 15)
    assert row.provenance["skipped_keys"] == ["class2/zz_bogus.jpg"]
    assert (row.provenance["decoded_on_device"], row.provenance["decoded_with_pil"]) == (10, 4)
    assert row.metrics == reference.metrics


def bomb_header(claimed: int = 20000) -> bytes:
    """A 64x64 baseline JPEG (~700 bytes) whose frame header claims ``claimed`` x ``claimed``."""
    data = bytearray(baseline(64, 64, 3))
    i = data.find(b"\xff\xc0")
    data[i + 5 : i + 7] = claimed.to_bytes(2, "big")
    data[i + 7 : i + 9] = claimed.to_bytes(2, "big")
    return bytes(data)


def test_the_batched_decoder_refuses_a_decompression_bomb_before_decoding_it(tmp_path):
    """The torchvision path decoded a 694-byte JPEG claiming 20000x20000 (1.2 GB of memory) and
    scored it; like the PIL path, it must refuse it from the header, naming the file."""
    bomb = bomb_header()
    assert "decompression-bomb limit" in jpeg_fallback_reason(bomb)
    assert jpeg_fallback_reason(bomb_header(64)) is None  # the same file, honest about its size
    data = write_folder_dataset(tmp_path / "photos")
    (data / "class2" / "zz_bomb.jpg").write_bytes(bomb)

    def evaluate(run_dir: str, **kw) -> None:
        config = RunConfig(shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / run_dir), batch_size=4,
                           workers=0, cache_dir="", progress=False, decoder="torchvision", **kw)  # fmt: skip
        net = PatchNet(f"folder:{data.name}")
        Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])

    with pytest.raises(ValueError, match=r"zz_bomb\.jpg.*(DecompressionBomb|decompression bomb)"):
        evaluate("run")
    evaluate("run", skip_bad_images=True)
    (row,) = RunDir(tmp_path / "run").read_results()
    assert row.provenance["skipped_keys"] == ["class2/zz_bomb.jpg"]
