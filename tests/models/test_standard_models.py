import json
import math

import numpy as np
import pytest
import torch
from tiny_clip import images

from harness.api import Classifier, Predictions
from harness.registry import get_model_factory
from models.checkpoints import save_safetensors
from models.ensembles import EnsembleClassifier, ensemble_predictions
from models.fake import FakeClassifier
from models.timm_models import preprocess_from_timm


def test_every_builtin_is_registered_through_entry_points():
    for name in ("clip", "finetuned", "wiseft", "soup", "ensemble", "timm", "torchvision", "fake"):
        assert callable(get_model_factory(name))


def test_fake_is_deterministic_and_depends_on_the_image():
    fake = get_model_factory("fake")
    a, b = fake("x", num_classes="10", seed="3"), fake("x", num_classes="10", seed="3")
    x = images(2)
    assert isinstance(a, Classifier) and a.logits(x).shape == (2, 10)
    assert torch.equal(a.logits(x), b.logits(x))
    assert not torch.equal(a.logits(x)[0], a.logits(x)[1])
    assert not torch.equal(fake("x", num_classes="10", seed="4").logits(x), a.logits(x))
    assert a.describe()["tags"] == ["fake"] and a.label_space == "imagenet-1k"
    with pytest.raises(ValueError, match="num_classes='ten': expected an integer"):
        fake("x", num_classes="ten")


def _timm_tiny(num_classes=5):
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)


def test_timm_checkpoint_round_trips_with_its_pretrained_preprocessing(tmp_path):
    module = _timm_tiny().eval()
    torch.save({"epoch": 3, "state_dict": module.state_dict()}, tmp_path / "train_ckpt.pth.tar")
    save_safetensors(module.state_dict(), tmp_path / "test_resnet.safetensors")
    x = images(2, size=32)
    with torch.no_grad():
        expected = module(x)
    for name in ("train_ckpt.pth.tar", "test_resnet.safetensors"):
        clf = get_model_factory("timm")("test_resnet", weights=str(tmp_path / name), label_space="toy-5")
        assert clf.num_classes == 5  # read from the checkpoint's head
        assert torch.allclose(clf.logits(x), expected, atol=1e-5)
    spec = clf.preprocess_spec
    # timm's test_resnet pretrained cfg: 160 px, crop_pct 0.95, bilinear, mean/std 0.5
    assert (spec.image_size, spec.resize_size, spec.interpolation) == (160, math.floor(160 / 0.95), "bilinear")
    assert spec.mean == (0.5, 0.5, 0.5) and clf.describe()["tags"] == ["standard"]
    with pytest.raises(ValueError, match="does not fit timm architecture 'test_efficientnet'"):
        get_model_factory("timm")("test_efficientnet", weights=str(tmp_path / "test_resnet.safetensors"), label_space="toy-5")
    # The engine merges weights through state_dict(): the module's own (checkpoint) names.
    assert list(clf.state_dict()) == list(module.state_dict())
    other = _timm_tiny()
    with torch.no_grad():
        for t in other.parameters():
            t.mul_(0.5)
    clf.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(clf.logits(x), other.eval()(x), atol=1e-5)


def test_timm_preprocessing_matches_timm_transform():
    from PIL import Image
    from timm.data import create_transform

    from harness.transforms import eval_transform

    cfg = {"input_size": (3, 40, 40), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3,
           "crop_pct": 0.9, "crop_mode": "center"}
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    ref = create_transform(**{k: v for k, v in cfg.items()})
    assert torch.allclose(eval_transform(preprocess_from_timm(cfg))(img), ref(img), atol=1e-5)
    with pytest.raises(ValueError, match="crop_mode 'border'"):
        preprocess_from_timm(dict(cfg, crop_mode="border"))


def test_torchvision_uses_the_weights_recipe_transform(tmp_path):
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(module.state_dict(), tmp_path / "r18.pt")
    tv = get_model_factory("torchvision")
    clf = tv("resnet18", weights=str(tmp_path / "r18.pt"), label_space="toy-3")
    x = images(2, size=32)
    with torch.no_grad():
        assert torch.allclose(clf.logits(x), module(x), atol=1e-5)
    s = clf.preprocess_spec  # IMAGENET1K_V1: resize 256, crop 224, bilinear
    assert (s.resize_size, s.image_size, s.interpolation) == (256, 224, "bilinear")
    with pytest.raises(ValueError, match="unknown recipe 'V9'"):
        tv("resnet18", weights=str(tmp_path / "r18.pt"), recipe="V9")
    with pytest.raises(ValueError, match="Did you mean: resnet18"):
        tv("resnet181", weights=str(tmp_path / "r18.pt"))


def test_ensemble_of_classifiers_and_of_stored_predictions_agree(tmp_path):
    a, b = FakeClassifier("a", 6, seed=1), FakeClassifier("b", 6, seed=2)
    x = images(4)
    ens = EnsembleClassifier([a, b])
    assert torch.allclose(ens.logits(x), (a.logits(x) + b.logits(x)) / 2)
    keys = np.array(["k0", "k1", "k2", "k3"])
    labels = np.array([0, 1, 2, 3])
    pa = Predictions("a", "toy", keys, labels, a.logits(x).numpy().astype(np.float16))
    perm = np.array([2, 0, 3, 1])
    pb = Predictions("b", "toy", keys[perm], labels[perm], b.logits(x).numpy()[perm].astype(np.float16))
    stored = ensemble_predictions([pa, pb])
    expected = (pa.logits.astype(np.float32) + b.logits(x).numpy().astype(np.float16).astype(np.float32)) / 2
    assert np.array_equal(stored.logits, expected.astype(np.float16)) and list(stored.keys) == list(keys)
    (tmp_path / "members.json").write_text(json.dumps([{"model": "fake:a", "args": {"num_classes": 6, "seed": 1}},
                                                       {"model": "fake:b", "args": {"num_classes": 6, "seed": 2}}]))
    built = get_model_factory("ensemble")("", members=str(tmp_path / "members.json"))
    assert torch.allclose(built.logits(x), ens.logits(x))
    with pytest.raises(ValueError, match="preprocess images differently"):
        EnsembleClassifier([a, FakeClassifier("c", 6, image_size=64)])
    with pytest.raises(ValueError, match="no prediction for key"):
        ensemble_predictions([pa, Predictions("c", "toy", np.array(["k0", "k1", "k2", "zz"]), labels, pa.logits)])
