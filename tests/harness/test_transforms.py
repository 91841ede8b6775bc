import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import PreprocessSpec
from harness.transforms import eval_transform, geometry, normalize


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (100, 300)])
def test_matches_open_clip_reference_transform(size):
    import open_clip

    ref = open_clip.image_transform(224, is_train=False)
    spec = PreprocessSpec(image_size=224, resize_size=224)
    img = _image(*size)
    expected = ref(img)
    got = eval_transform(spec)(img)
    assert got.shape == expected.shape == (3, 224, 224)
    # float32 normalise in a different order: within float rounding of the reference
    assert torch.allclose(got, expected, atol=1e-5)


def test_matches_timm_reference_transform_with_crop_pct():
    from timm.data import create_transform

    ref = create_transform(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bilinear",
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    spec = PreprocessSpec(image_size=224, resize_size=256, interpolation="bilinear",
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = _image(480, 360, seed=3)
    assert torch.allclose(eval_transform(spec)(img), ref(img), atol=1e-5)


def test_geometry_is_uint8_and_normalize_is_batched():
    spec = PreprocessSpec(image_size=32, resize_size=32, resize_mode="squash", crop="none")
    out = geometry(spec)(_image(64, 48).convert("L"))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    batch = normalize(torch.stack([out, out]), spec)
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 32, 32)


def test_unknown_interpolation_is_a_clear_error():
    spec = PreprocessSpec(image_size=8, resize_size=8, interpolation="cubic-ish")
    with pytest.raises(ValueError, match="unknown interpolation 'cubic-ish'"):
        eval_transform(spec)(_image(10, 10))
