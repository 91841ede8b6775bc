"""torchvision's own weights are known releases: recognised by the sha256 prefix in their file
names (read from torchvision's weights enums), evaluated with the transform of the recipe they
were published with, and checked against the ImageNet top-1 torchvision publishes for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models.releases as releases
from harness.api import Result
from models.checkpoints import file_sha256
from models.releases import Release, torchvision_releases
from models.timm_models import torchvision
from reports.published import published_check


def test_torchvision_releases_are_read_from_its_weights_enums():
    by_recipe = {r.tag: r for r in torchvision_releases("resnet50")}
    # https://download.pytorch.org/models/resnet50-0676ba61.pth and resnet50-11ad3fa6.pth
    assert by_recipe["IMAGENET1K_V1"].sha256 == "0676ba61" and by_recipe["IMAGENET1K_V1"].top1 == pytest.approx(0.7613)
    assert by_recipe["IMAGENET1K_V2"].sha256 == "11ad3fa6" and by_recipe["IMAGENET1K_V2"].top1 == pytest.approx(0.80858)
    assert by_recipe["IMAGENET1K_V1"].published == "torchvision:resnet50@IMAGENET1K_V1"
    assert torchvision_releases("no-such-arch") == ()


@pytest.fixture
def v1_weights(tmp_path: Path, monkeypatch) -> Path:
    """A random-init resnet50 registered as torchvision's IMAGENET1K_V1 release (a real release's
    sha256 cannot be produced without its file)."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path / "resnet50-v1.pth"
    torch.save(resnet50().state_dict(), path)
    sha = file_sha256(path)
    table = (Release("resnet50", "IMAGENET1K_V1", sha[:8], "", "torchvision:resnet50@IMAGENET1K_V1", None, 0.7613),)
    monkeypatch.setattr(releases, "torchvision_releases", lambda arch: table if arch == "resnet50" else ())
    return path


def test_known_weights_get_their_own_recipes_transform_not_the_default(v1_weights):
    clf = torchvision("resnet50", weights=str(v1_weights))
    info = clf.describe()
    # V1 was published with resize 256 / crop 224; the library's DEFAULT recipe (V2) resizes to 232.
    assert (clf.preprocess_spec.resize_size, clf.preprocess_spec.image_size) == (256, 224)
    assert info["preprocess_recipe"] == "IMAGENET1K_V1" and "known release" in info["preprocess_recipe_source"]
    assert info["release"]["published"] == "torchvision:resnet50@IMAGENET1K_V1"
    assert info["release"]["figures"] == {"imagenet": pytest.approx(0.7613)}
    assert torchvision("resnet50", weights=str(v1_weights), recipe="IMAGENET1K_V1").preprocess_spec.resize_size == 256


def test_a_recipe_that_contradicts_the_release_is_refused(v1_weights):
    with pytest.raises(ValueError, match=r"IMAGENET1K_V1 weights .*recipe=IMAGENET1K_V2 .*drop recipe= or pass recipe=IMAGENET1K_V1"):
        torchvision("resnet50", weights=str(v1_weights), recipe="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="recipe=DEFAULT"):  # DEFAULT is V2 for resnet50
        torchvision("resnet50", weights=str(v1_weights), recipe="DEFAULT")


def test_unknown_weights_keep_the_default_recipe_and_say_so(tmp_path):
    from torchvision.models import resnet50

    path = tmp_path / "mine.pth"
    torch.save(resnet50().state_dict(), path)
    clf = torchvision("resnet50", weights=str(path))
    assert clf.preprocess_spec.resize_size == 232 and clf.describe()["release"] is None
    assert "DEFAULT" in clf.describe()["preprocess_recipe_source"]


def _row(top1: float, protocol: dict | None = None) -> Result:
    return Result(model="torchvision:resnet50", setting="imagenet", shift="imagenet", shift_version="", n=50_000,
                  n_expected=50_000, metrics={"top1": top1}, protocol=protocol or {})


def test_the_published_check_uses_the_figure_torchvision_publishes(v1_weights):
    model = torchvision("resnet50", weights=str(v1_weights)).describe()
    ok = published_check(model, _row(0.7601))
    assert ok["verdict"] == "reproduces" and ok["expected"] == pytest.approx(0.7613) and "torchvision" in ok["source"]
    assert published_check(model, _row(0.7460))["verdict"] == "differs"  # 1.5 points below
    # a row scored another way (here: another decoder) has no published figure to meet
    assert published_check(model, _row(0.7601, {"decoder": "nvjpeg"})) is None
