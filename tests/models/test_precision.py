"""The engine owns device and precision: every built-in model, built from tiny real
architectures through its factory and run by the engine, computes in the precision asked for.

Forward hooks on the linear, convolution and attention layers inside each model see bf16
outputs under ``--precision bf16`` and ``bf16-weights`` and fp32 under ``fp32``; the fp32
agreement check compares a real reduced-precision pass with a real fp32 one; the weights are
bit-identical after a pass; a classifier the engine places on a device runs there (the ``meta``
device stands in for a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clip import TINY_CLIP, make_clip

from harness.api import Predictions
from harness.config import RunConfig
from harness.engine.numerics import place
from harness.engine.run import Engine, ModelSource, model_from_spec, rescore
from harness.engine.store import RunDir
from models.checkpoints import save_safetensors
from shifts.generic import ImageFolderShift

CLASSES = 4
# A tiny open_clip ModifiedResNet (the RN50 family): stem, 4 stages, attention pooling.
TINY_RN = {
    "quick_gelu": False,  # stated, as a config for real weights must (or activation= must say it)
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LAYERS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.MultiheadAttention)


def _head(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"classification_head.weight": torch.randn(CLASSES, TINY_CLIP["embed_dim"], generator=g),
            "classification_head.bias": torch.randn(CLASSES, generator=g)}


@pytest.fixture(scope="module")
def tiny_rn(tmp_path_factory):
    from models.clip import register_config

    path = tmp_path_factory.mktemp("cfg") / "tiny-rn.json"
    path.write_text(json.dumps(TINY_RN))
    return register_config(path)


@pytest.fixture()
def photos(tmp_path) -> Path:
    """ImageFolder layout, 4 classes x 2 JPEGs of different sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for i in range(8):
        d = root / f"c{i % CLASSES}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = [(48, 40), (40, 56)][i % 2]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


@pytest.fixture()
def model_specs(tmp_path, tiny_arch, tiny_rn, tiny_clip_state, photos):
    """``(NAME:ARG, options)`` of every built-in model family, from checkpoint files on disk."""
    import timm
    import torchvision

    space = f"folder:{photos.name}"
    torch.save(tiny_clip_state, tmp_path / "clip.pt")
    (tmp_path / "names.txt").write_text("cat\ndog\nfish\nbird\n")
    (tmp_path / "templates.json").write_text(json.dumps(["a photo of a {c}.", "a {c}."]))
    ft = {f"image_encoder.model.{k}": v for k, v in make_clip(tiny_arch, 7).state_dict().items()} | _head(1)
    zs = {f"image_encoder.model.{k}": v for k, v in tiny_clip_state.items()} | _head(0)
    torch.save(ft, tmp_path / "ft.pt")
    torch.save(zs, tmp_path / "zs.pt")
    (tmp_path / "soup").mkdir()
    for i in range(2):
        state = {f"model.{k}": v for k, v in make_clip(tiny_arch, 20 + i).state_dict().items()} | _head(30 + i)
        save_safetensors(state, tmp_path / "soup" / f"ing{i}.safetensors")
    torch.manual_seed(0)
    rn = {f"visual.{k}": v for k, v in make_clip(tiny_rn, 0).visual.state_dict().items()} | _head(2)
    save_safetensors(rn, tmp_path / "rn.safetensors")
    save_safetensors(timm.create_model("test_resnet", num_classes=CLASSES).state_dict(), tmp_path / "timm.safetensors")
    tv = torchvision.models.get_model("resnet18", weights=None, num_classes=CLASSES).state_dict()
    save_safetensors(tv, tmp_path / "tv.safetensors")
    (tmp_path / "members.json").write_text(json.dumps([
        {"model": f"finetuned:{tiny_arch}", "args": {"weights": str(tmp_path / "ft.pt"), "label_space": space}},
        {"model": f"finetuned:{tiny_arch}", "args": {"weights": str(tmp_path / "zs.pt"), "label_space": space}},
    ]))
    common = {"label_space": space}
    return {
        "clip-vit": (f"clip:{tiny_arch}", {**common, "weights": str(tmp_path / "clip.pt"), "classnames": str(tmp_path / "names.txt"),
                                           "templates": str(tmp_path / "templates.json")}),
        "clip-resnet": (f"finetuned:{tiny_rn}", {**common, "weights": str(tmp_path / "rn.safetensors")}),
        "finetuned": (f"finetuned:{tiny_arch}", {**common, "weights": str(tmp_path / "ft.pt")}),
        "wiseft": (f"wiseft:{tiny_arch}", {**common, "zeroshot": str(tmp_path / "zs.pt"), "finetuned": str(tmp_path / "ft.pt"), "alpha": "0.3"}),
        "soup": (f"soup:{tiny_arch}", {**common, "ingredients": str(tmp_path / "soup")}),
        "timm": ("timm:test_resnet", {**common, "weights": str(tmp_path / "timm.safetensors")}),
        "torchvision": ("torchvision:resnet18", {**common, "weights": str(tmp_path / "tv.safetensors")}),
        "ensemble": ("ensemble:pair", {"members": str(tmp_path / "members.json")}),
    }


def _hooked(source: ModelSource, seen: dict[str, list[torch.dtype]], weights: list):
    """The source, built by its factory, with forward hooks on its compute layers recording
    the dtype of each call's output, in call order."""

    def build():
        clf = source.build()
        weights.append({k: v.detach().clone() for k, v in clf.state_dict().items()})
        for name, module in clf.named_modules():
            if isinstance(module, LAYERS) or type(module).__name__.endswith("Attention"):
                def hook(m, args, out, name=name):
                    out = out[0] if isinstance(out, tuple) else out
                    seen.setdefault(name, []).append(out.dtype)
                module.register_forward_hook(hook)
        weights.append(clf)
        return clf

    return ModelSource(source.name, source.identity, build, check=source.build)  # the checked build is not watched


def _run(tmp_path: Path, photos: Path, source: ModelSource, precision: str, tag: str) -> dict:
    config = RunConfig(shifts=("folder",), data_root=str(photos), run_dir=str(tmp_path / f"run-{tag}"), batch_size=3,
                       workers=0, cache_dir="", progress=False, precision=precision, device="cpu", agreement_sample=5,
                       min_agreement=0.0)  # random weights on noise: near-ties; the check itself is tested
    Engine(config, get_shift=lambda name: ImageFolderShift()).run([source])
    rows = RunDir(config.run_dir).read_results()
    assert len(rows) == 1
    return rows[0].provenance


MODELS = ("clip-vit", "clip-resnet", "finetuned", "wiseft", "soup", "timm", "torchvision", "ensemble")
EXPECTED = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16-weights": torch.bfloat16}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_layer_computes_in_the_precision_the_engine_was_given(tmp_path, photos, model_specs, model):
    spec, options = model_specs[model]
    for precision, dtype in EXPECTED.items():
        seen: dict[str, list[torch.dtype]] = {}
        held: list = []
        prov = _run(tmp_path, photos, _hooked(model_from_spec(spec, options), seen, held), precision, precision)
        assert len(seen) >= 3, f"{model}: only {sorted(seen)} hooked"
        # 8 images in batches of 3: three calls per layer; a reduced precision then re-runs
        # the 5-image sample in fp32 (the agreement check, batched like the pass: two calls),
        # which must really be fp32
        want = [dtype] * 3 + ([torch.float32] * 2 if precision != "fp32" else [])
        wrong = {name: calls for name, calls in seen.items() if calls != want}
        assert not wrong, f"{model} under --precision {precision}: expected {want}, layers computed {wrong}"
        before, clf = held
        after = clf.state_dict()
        assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before), (
            f"{model}: weights changed by a {precision} pass")
        assert prov["precision"] == precision and prov["model"]["precision"] == prov["numerics"]
        assert prov["numerics"] == {"fp32": "fp32", "bf16": "bf16-autocast", "bf16-weights": "bf16-weights"}[precision]
        conv = model in ("clip-resnet", "timm", "torchvision")
        assert prov["memory_format"] == ("channels_last" if conv else "contiguous")
        assert prov["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
        if precision != "fp32":
            # a real bf16 pass against a real fp32 one: the logits differ, the ranking agrees
            assert prov["fp32_agreement_n"] == 5 and prov["fp32_max_abs_diff"] > 0, prov
        else:
            assert "fp32_agreement" not in prov


def test_reduced_precision_changes_the_logits_of_a_real_model_and_fp32_is_exact(tmp_path, photos, model_specs):
    """The stored logits of bf16 and bf16-weights passes differ from fp32 (reduced precision
    really ran) yet keep the ranking; fp32 reproduces a direct forward of the module."""
    spec, options = model_specs["timm"]
    logits = {}
    for precision in EXPECTED:
        source = model_from_spec(spec, options)
        _run(tmp_path, photos, source, precision, precision)
        logits[precision] = Predictions.load(RunDir(tmp_path / f"run-{precision}").predictions_path(source.name, "folder")).logits
    for reduced in ("bf16", "bf16-weights"):
        diff = np.abs(logits[reduced].astype(np.float32) - logits["fp32"].astype(np.float32))
        assert diff.max() > 0, f"{reduced} ran in fp32"


def test_a_classifier_placed_on_a_device_computes_there(model_specs):
    """``meta`` stands in for a GPU: inputs must follow the parameters, not a stored device."""
    from models.ensembles import EnsembleClassifier
    from models.fake import FakeClassifier

    built = {m: model_from_spec(*model_specs[m]).build() for m in ("clip-resnet", "finetuned", "timm", "ensemble")}
    built["fake"] = FakeClassifier(num_classes=CLASSES, image_size=32)
    assert isinstance(built["ensemble"], EnsembleClassifier)
    for name, clf in built.items():
        place(clf, torch.device("meta"))
        x = torch.zeros(2, 3, 32, 32, device="meta")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = clf.logits(x)
        assert out.device.type == "meta" and tuple(out.shape) == (2, clf.num_classes), name
        if isinstance(clf, torch.nn.Module):
            assert all(p.device.type == "meta" for p in clf.parameters()), f"{name}: members left behind"


@pytest.mark.parametrize("option", ["precision=bf16", "device=cuda"])
def test_the_old_model_options_point_at_the_engine_settings(model_specs, option):
    spec, options = model_specs["timm"]
    key, value = option.split("=")
    flag = {"precision": "--precision", "device": "--device"}[key]
    with pytest.raises(ValueError, match=f"no longer a model option.*{flag} {value}"):
        model_from_spec(spec, {**options, key: value}).build()


def test_stored_float16_logits_are_what_run_time_metrics_and_score_both_use(tmp_path, photos, model_specs):
    spec, options = model_specs["finetuned"]
    source = model_from_spec(spec, options)
    prov = _run(tmp_path, photos, source, "bf16", "score")
    assert prov["fp16_top1_changed"] == 0
    store = RunDir(tmp_path / "run-score")
    before = store.read_results()
    again = rescore(store, spec_of=lambda name: ImageFolderShift().spec_for(photos))
    assert [r.metrics for r in again] == [r.metrics for r in before]
    preds = Predictions.load(store.predictions_path(source.name, "folder"))
    top1 = float((preds.logits.astype(np.float32).argmax(1) == preds.labels).mean())
    assert before[0].metrics["top1"] == top1


def test_top1_changes_from_float16_rounding_are_counted():
    from harness.engine.predict import fp16_top1_changed

    logits = np.asarray([[1000.1, 1000.2, 0.0], [3.0, 1.0, 2.0], [-5.0, -4.0, -4.5]], dtype=np.float32)
    stored = logits.astype(np.float16)  # 1000.1 and 1000.2 both round to 1000.0: a tie, argmax 0
    assert fp16_top1_changed(logits, stored) == 1
    assert fp16_top1_changed(logits[1:], stored[1:]) == 0
