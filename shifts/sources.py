"""Where each public shift's archive comes from, how to check it, and where its contents go.

Every URL, size and checksum below is copied from a named source (the dataset's own repository,
the `wilds` package, TensorFlow Datasets' checksum files); nothing is guessed. Where the source
publishes no checksum the entry says so (``sha256=None``): ``shiftbench download`` then records the
digest computed on the first download (``.shiftbench/downloads.json`` under the data root) and
holds every later download of that archive to it.

The licensed datasets (ImageNet val, ObjectNet) cannot be downloaded for the user: ``LICENSED``
says where to get them and which ``shiftbench prepare`` command lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Archive:
    """One published archive of a shift.

    ``top`` is the archive's single top-level folder (``None``: its members sit at the top, as in
    the WILDS archives, which the `wilds` package extracts straight into ``<name>_v<version>/``).
    ``target`` is the folder under the data root where the shift looks for it.
    """

    shift: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    #: Where the URL, size and checksum were read (cited in errors and docs).
    source: str
    top: str | None
    target: str
    #: Whether ``size`` is the exact byte count (TFDS) or a figure for progress only (WILDS).
    size_exact: bool = True


HF_V2 = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main"
TFDS_V2 = "tensorflow/datasets: tensorflow_datasets/datasets/imagenet_v2/checksums.tsv"
WILDS_SRC = "p-lambda/wilds: wilds/datasets/{}_dataset.py _versions_dict (no checksum published)"

ARCHIVES: dict[str, Archive] = {
    # ImageNetV2: the authors moved the tarballs from S3 to Hugging Face (modestyachts/ImageNetV2
    # #12); TFDS's imagenet_v2 builder lists these URLs with their sizes and sha256, and its
    # _TAR_TOPDIR names each tarball's single top folder.
    "imagenetv2": Archive(
        "imagenetv2",
        "imagenetv2-matched-frequency.tar.gz",
        (f"{HF_V2}/imagenetv2-matched-frequency.tar.gz",),
        "f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
        1_264_079_360,
        TFDS_V2,
        "imagenetv2-matched-frequency-format-val",
        "imagenetv2-matched-frequency-format-val",
    ),
    "imagenetv2-threshold-0.7": Archive(
        "imagenetv2-threshold-0.7",
        "imagenetv2-threshold0.7.tar.gz",
        (f"{HF_V2}/imagenetv2-threshold0.7.tar.gz",),
        "32142bfe998f9cfa4141be691f6a80eeb1e27b24bd532a668eb08c26d98897a2",
        1_249_906_176,
        TFDS_V2,
        "imagenetv2-threshold0.7-format-val",
        "imagenetv2-threshold0.7-format-val",
    ),
    "imagenetv2-top-images": Archive(
        "imagenetv2-top-images",
        "imagenetv2-top-images.tar.gz",
        (f"{HF_V2}/imagenetv2-top-images.tar.gz",),
        "85e4ace30f3f0d660152062254b8759dda66267b27f7ec0fd8d5768f1073a04b",
        1_245_927_936,
        TFDS_V2,
        "imagenetv2-top-images-format-val",
        "imagenetv2-top-images-format-val",
    ),
    # ImageNet-R / -A: the authors' tarballs (hendrycks/imagenet-r, hendrycks/natural-adv-examples
    # READMEs); size and sha256 from TFDS, whose builders read <archive>/imagenet-{r,a}/<wnid>/.
    "imagenet-r": Archive(
        "imagenet-r",
        "imagenet-r.tar",
        ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
        "18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52",
        2_191_079_936,
        "tensorflow/datasets: tensorflow_datasets/datasets/imagenet_r/checksums.tsv",
        "imagenet-r",
        "imagenet-r",
    ),
    "imagenet-a": Archive(
        "imagenet-a",
        "imagenet-a.tar",
        ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
        "3bb3632277e6ba6392ea64c02ddbf4dd2266c9caffd6bc09c9656d28f012589e",
        687_552_512,
        "tensorflow/datasets: tensorflow_datasets/datasets/imagenet_a/checksums.tsv",
        "imagenet-a",
        "imagenet-a",
    ),
    # ImageNet-Sketch: HaohanWang/ImageNet-Sketch's README links the Google Drive zip, which TFDS
    # lists with its size and sha256 (its builder asserts every member starts with "sketch/").
    # Google Drive answers a file this large with a confirmation web page, not the zip, so the
    # copy the dataset's co-author uploaded to Hugging Face (songweig/imagenet_sketch, the URL
    # CLIP_benchmark's builder names) is tried first; it is held to the same sha256, so a copy
    # that differs is refused naming both digests, never extracted.
    "imagenet-sketch": Archive(
        "imagenet-sketch",
        "ImageNet-Sketch.zip",
        (
            "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
            "https://drive.google.com/u/0/uc?id=1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA&export=download",
        ),
        "4d3ce6b82a7c48aabf14aeac105eb533e75707f152cc858f55bfc022031a72ed",
        7_593_573_012,
        "tensorflow/datasets: tensorflow_datasets/datasets/imagenet_sketch/checksums.tsv",
        "sketch",
        "sketch",
    ),
    # WILDS: the CodaLab bundles the `wilds` package downloads (as archive.tar.gz, extracted into
    # <root>/<name>_v<version>/). The package gives an approximate compressed size for its
    # progress bar and no checksum: the digest is recorded on first download.
    "iwildcam": Archive(
        "iwildcam",
        "iwildcam_v2.0.tar.gz",
        (
            "https://worksheets.codalab.org/rest/bundles/0x6313da2b204647e79a14b468131fcd64/contents/blob/",
        ),
        None,
        11_957_420_032,
        WILDS_SRC.format("iwildcam"),
        None,
        "iwildcam_v2.0",
        size_exact=False,
    ),
    "fmow": Archive(
        "fmow",
        "fmow_v1.1.tar.gz",
        (
            "https://worksheets.codalab.org/rest/bundles/0xaec91eb7c9d548ebb15e1b5e60f966ab/contents/blob/",
        ),
        None,
        53_893_324_800,
        WILDS_SRC.format("fmow"),
        None,
        "fmow_v1.1",
        size_exact=False,
    ),
    "camelyon17": Archive(
        "camelyon17",
        "camelyon17_v1.0.tar.gz",
        (
            "https://worksheets.codalab.org/rest/bundles/0xe45e15f39fb54e9d9e919556af67aabe/contents/blob/",
        ),
        None,
        10_658_709_504,
        WILDS_SRC.format("camelyon17"),
        None,
        "camelyon17_v1.0",
        size_exact=False,
    ),
}

#: Shifts whose data sits behind a licence: where to get it and how to lay it out.
LICENSED: dict[str, str] = {
    "imagenet": (
        "ImageNet val is distributed only after accepting the ImageNet terms at "
        "https://image-net.org/download-images (ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz). "
        "Then run: shiftbench prepare imagenet --val-tar ILSVRC2012_img_val.tar "
        "--devkit ILSVRC2012_devkit_t12.tar.gz --data-root DIR"
    ),
    "imagenet-heldout": (
        "the held-out slice is drawn from ImageNet train (ILSVRC2012_img_train.tar from "
        "https://image-net.org/download-images, extracted as imagenet/train/<wnid>/); then run "
        "shiftbench make-heldout --data-root DIR"
    ),
    "objectnet": (
        "ObjectNet is distributed only after accepting its licence at https://objectnet.dev/download.html "
        "(objectnet-1.0.zip; the page gives the zip's password). "
        "Then run: shiftbench prepare objectnet --zip objectnet-1.0.zip --data-root DIR"
    ),
}
LICENSED["objectnet-names"] = LICENSED["objectnet"]


#: ImageNet archives as torchvision checks them (torchvision/datasets/imagenet.py ARCHIVE_META):
#: file name and MD5, the only digest ImageNet's distributors publish for them.
IMAGENET_MD5 = {
    "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
    "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
}
#: The zip password objectnet.dev gives with the download (also in CLIP_benchmark's builder).
OBJECTNET_PASSWORD = "objectnetisatestset"


def archive_for(shift: str) -> Archive:
    """The archive of a downloadable shift, or an error saying how to get the data instead."""
    if shift in ARCHIVES:
        return ARCHIVES[shift]
    if shift in LICENSED:
        raise ValueError(f"{shift} cannot be downloaded for you: {LICENSED[shift]}")
    known = ", ".join(sorted(ARCHIVES))
    raise ValueError(f"no published archive for {shift!r}; downloadable shifts: {known}")
