"""The ImageNet distribution shifts: ImageNetV2 (three variants), ImageNet-R, -A and -Sketch."""

from __future__ import annotations

from pathlib import Path

from harness.api import ShiftSpec
from shifts.base import Record, check_class_folders, folder_records
from shifts.imagenet import ImageNetFamily
from shifts.imagenet_meta import IMAGENET_LABEL_SPACE, imagenet_wnids, subset_class_map

V2_HOMEPAGE = "https://github.com/modestyachts/ImageNetV2"
V2_CITATION = "Recht et al., Do ImageNet Classifiers Generalize to ImageNet?, ICML 2019"


class ImageNetV2(ImageNetFamily):
    """ImageNetV2: folders ``0``..``999`` are ImageNet class indices, read as integers.

    Sorting them as text (torchvision ImageFolder) would put ``10`` before ``2`` and mislabel 990
    classes; here the label is ``int(folder)``. Accepted folders: the loader's
    ``ImageNetV2-<variant>`` and the tarball's ``imagenetv2-<variant>-format-val``, directly under
    the data root or under ``imagenetv2/``.
    """

    variant = "matched-frequency"
    spellings: tuple[str, ...] = ("matched-frequency",)

    def __init__(self) -> None:
        names = []
        for s in self.spellings:
            for base in (f"ImageNetV2-{s}", f"imagenetv2-{s}-format-val"):
                names += [f"imagenetv2/{base}", base]
        self.folder_names = tuple(names)

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        folders = [str(i) for i in range(1000)]
        check_class_folders(dataset_dir, folders, f"ImageNetV2 {self.variant}")
        return folder_records(dataset_dir, folders, range(1000), f"ImageNetV2 {self.variant}")


def _v2_spec(name: str, variant: str) -> ShiftSpec:
    return ShiftSpec(
        name=name,
        version=f"imagenetv2-{variant}",
        family="imagenet",
        label_space=IMAGENET_LABEL_SPACE,
        num_classes=1000,
        expected_size=10_000,
        id_reference="imagenet",
        protocol={"variant": variant, "labels": "int(folder)"},
        homepage=V2_HOMEPAGE,
        citation=V2_CITATION,
        licence="ImageNetV2 terms (images from Flickr, research use)",
    )


class ImageNetV2MatchedFrequency(ImageNetV2):
    spec = _v2_spec("imagenetv2", "matched-frequency")


class ImageNetV2Threshold07(ImageNetV2):
    spec = _v2_spec("imagenetv2-threshold-0.7", "threshold-0.7")
    variant = "threshold-0.7"
    spellings = ("threshold-0.7", "threshold0.7")


class ImageNetV2TopImages(ImageNetV2):
    spec = _v2_spec("imagenetv2-top-images", "top-images")
    variant = "top-images"
    spellings = ("top-images", "topimages")


class ImageNetSubset(ImageNetFamily):
    """ImageNet-R/-A: 200 wnid folders (plus the authors' README.txt); label = sorted-wnid index.

    A 1000-way model is scored through the class map: the logits at the 200 ImageNet indices, in
    ascending order (timm's ``imagenet_{r,a}_indices.txt``).
    """

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        wnids = self.spec.class_map.targets
        check_class_folders(dataset_dir, wnids, self.spec.name, allowed_files=("README.txt",))
        return folder_records(dataset_dir, wnids, range(len(wnids)), self.spec.name)


def _subset_spec(which: str, size: int, homepage: str, citation: str) -> ShiftSpec:
    return ShiftSpec(
        name=f"imagenet-{which}",
        version="1.0",
        family="imagenet",
        label_space=IMAGENET_LABEL_SPACE,
        num_classes=200,
        expected_size=size,
        class_map=subset_class_map(which),
        id_reference="imagenet",
        protocol={"projection": "imagenet-1k logits at the 200 subset indices"},
        homepage=homepage,
        citation=citation,
        licence="research use; images from the web",
    )


class ImageNetR(ImageNetSubset):
    spec = _subset_spec(
        "r",
        30_000,
        "https://github.com/hendrycks/imagenet-r",
        "Hendrycks et al., The Many Faces of Robustness, ICCV 2021",
    )
    folder_names = ("imagenet-r",)


class ImageNetA(ImageNetSubset):
    spec = _subset_spec(
        "a",
        7_500,
        "https://github.com/hendrycks/natural-adv-examples",
        "Hendrycks et al., Natural Adversarial Examples, CVPR 2021",
    )
    folder_names = ("imagenet-a",)


class ImageNetSketch(ImageNetFamily):
    """ImageNet-Sketch: 1000 wnid folders, 50,889 images (not 50,000)."""

    spec = ShiftSpec(
        name="imagenet-sketch",
        version="1.0",
        family="imagenet",
        label_space=IMAGENET_LABEL_SPACE,
        num_classes=1000,
        expected_size=50_889,
        id_reference="imagenet",
        homepage="https://github.com/HaohanWang/ImageNet-Sketch",
        citation="Wang et al., Learning Robust Global Representations by Penalizing Local Predictive Power, NeurIPS 2019",
        licence="research use; images from Google Image search",
    )
    folder_names = ("sketch", "imagenet-sketch/sketch", "imagenet-sketch")

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        wnids = imagenet_wnids()
        check_class_folders(dataset_dir, wnids, "ImageNet-Sketch")
        return folder_records(dataset_dir, wnids, range(1000), "ImageNet-Sketch")
