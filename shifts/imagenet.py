"""ImageNet val (the ID reference), its class-subset views and the held-out train slice.

Layouts read (under the data root):

- ``imagenet/val_in_folder/<wnid>/<file>`` or ``imagenet/val/<wnid>/<file>``: 1000 wnid folders,
  label = index of the wnid in sorted order.
- the flat official layout ``imagenet/val/ILSVRC2012_val_00000001.JPEG ...`` with the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat`` in ``imagenet/`` or in
  ``imagenet/ILSVRC2012_devkit_t12/data/``. The ground truth holds *devkit* class ids (1..1000,
  not sorted-wnid order), mapped to wnids through ``meta.mat``. Keys are ``<wnid>/<file>`` in both
  layouts, so predictions from either match.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness.api import ShiftSpec, id_view_setting
from harness.files import atomic_write_text
from shifts.base import (
    DatasetShift,
    Record,
    check_class_folders,
    folder_records,
    image_files,
    list_dir,
)
from shifts.imagenet_meta import (
    IMAGENET_LABEL_SPACE,
    imagenet_classnames,
    imagenet_templates,
    imagenet_wnids,
)

IMAGENET_HOMEPAGE = "https://image-net.org/challenges/LSVRC/2012/"
IMAGENET_CITATION = (
    "Russakovsky et al., ImageNet Large Scale Visual Recognition Challenge, IJCV 2015"
)
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIRS = (".", "ILSVRC2012_devkit_t12/data")
VAL_FILE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
VAL_NUMBER = re.compile(r"^ILSVRC2012_val_(\d{8})\.\w+$")  # any extension: sorted copies are often re-encoded


class ImageNetFamily(DatasetShift):
    """Shifts whose classes are (a subset of) ImageNet-1k: names and templates from open_clip."""

    def classnames(self, root: Path | None = None) -> list[str]:
        names = imagenet_classnames()
        cm = self.spec.class_map
        return [names[m[0]] for m in cm.members] if cm else list(names)

    def templates(self) -> list[str]:
        return list(imagenet_templates())


class ImageNetVal(ImageNetFamily):
    spec = ShiftSpec(
        name="imagenet",
        version="ILSVRC2012-val",
        family="imagenet",
        label_space=IMAGENET_LABEL_SPACE,
        num_classes=1000,
        expected_size=50_000,
        homepage=IMAGENET_HOMEPAGE,
        citation=IMAGENET_CITATION,
        licence="ImageNet terms of access (non-commercial research)",
    )
    folder_names = ("imagenet/val_in_folder", "imagenet/val", "imagenet/ILSVRC/Data/CLS-LOC/val")
    per_class = 50

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        dirs, files = list_dir(dataset_dir)
        wnids = imagenet_wnids()
        if dirs:
            check_class_folders(dataset_dir, wnids, "ImageNet val")
            records = folder_records(dataset_dir, wnids, range(1000), "ImageNet val")
            check_folders_against_ground_truth(records, val_ground_truth(dataset_dir, required=False))
            return records
        if not files:
            raise ValueError(
                f"{dataset_dir} is empty: extract ILSVRC2012_img_val.tar there (flat or in wnid folders)"
            )
        return flat_val_records(dataset_dir, files)


def _devkit_file(dataset_dir: Path, name: str) -> Path:
    looked = [dataset_dir.parent / d / name for d in DEVKIT_DIRS]
    for p in looked:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{dataset_dir} holds flat val images, which need the devkit's {name}; looked at "
        f"{', '.join(map(str, looked))}. Extract ILSVRC2012_devkit_t12.tar.gz into {dataset_dir.parent}, "
        "or sort the images into wnid folders"
    )


def devkit_wnids(meta_mat: Path) -> dict[int, str]:
    """Devkit ILSVRC2012_ID -> wnid for the 1000 leaf synsets of ``meta.mat``."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta_mat), squeeze_me=True)["synsets"]
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), int(s["num_children"])) for s in synsets]
    except Exception as exc:  # scipy raises assorted types on malformed files
        raise ValueError(
            f"{meta_mat}: not the ImageNet devkit meta.mat ({exc}); re-extract the devkit"
        ) from exc
    leaves = {i: w for i, w, children in rows if children == 0}
    if sorted(leaves.values()) != list(imagenet_wnids()) or sorted(leaves) != list(range(1, 1001)):
        raise ValueError(
            f"{meta_mat}: its leaf synsets are not the 1000 ILSVRC2012 classes with ids 1..1000; re-extract the devkit"
        )
    return leaves


KAGGLE_SOLUTION = "LOC_val_solution.csv"


def kaggle_val_wnids(solution: Path) -> dict[int, str]:
    """Image number -> wnid from Kaggle's ``LOC_val_solution.csv`` (ImageId, PredictionString
    whose first token is the wnid of the image's class)."""
    from shifts.wilds import read_csv

    known = set(imagenet_wnids())
    out: dict[int, str] = {}
    for i, row in enumerate(read_csv(solution, ("ImageId", "PredictionString"))):
        m = re.match(r"^ILSVRC2012_val_(\d{8})$", row["ImageId"])
        wnid = (row["PredictionString"].split() or [""])[0]
        if not m or wnid not in known:
            raise ValueError(
                f"{solution} row {i + 2}: not an ImageNet val id and wnid ({row['ImageId']!r}, {wnid!r})"
            )
        out[int(m.group(1))] = wnid
    return out


def flat_val_records(dataset_dir: Path, files: list[str]) -> list[Record]:
    truth = val_ground_truth(dataset_dir)
    assert truth is not None  # required: missing files raise instead
    return _flat_records(dataset_dir, files, *truth)


def val_ground_truth(dataset_dir: Path, required: bool = True) -> tuple[dict[int, str], Path] | None:
    """Image number -> wnid from the devkit (ground truth and ``meta.mat``) or, without it,
    Kaggle's ``LOC_val_solution.csv`` next to the val folder, and the file it came from. Missing
    files are an error naming where they were looked for, or, not ``required``, None."""
    kaggle = [p / KAGGLE_SOLUTION for p in list(dataset_dir.parents)[:4]]
    solution = next((p for p in kaggle if p.is_file()), None)
    has = {name: any((dataset_dir.parent / d / name).is_file() for d in DEVKIT_DIRS) for name in (GROUND_TRUTH, "meta.mat")}
    if solution is not None and not has[GROUND_TRUTH]:
        return kaggle_val_wnids(solution), solution
    if not required and not all(has.values()):
        return None
    gt_path = _devkit_file(dataset_dir, GROUND_TRUTH)
    id_to_wnid = devkit_wnids(_devkit_file(dataset_dir, "meta.mat"))
    lines = gt_path.read_text().split()
    try:
        gt = [int(x) for x in lines]
    except ValueError:
        raise ValueError(
            f"{gt_path}: expected one devkit class id per line; re-extract the devkit"
        ) from None
    bad_ids = [x for x in gt if x not in id_to_wnid]
    if bad_ids:
        raise ValueError(
            f"{gt_path}: class id {bad_ids[0]} is not in 1..1000; re-extract the devkit"
        )
    return {n + 1: id_to_wnid[g] for n, g in enumerate(gt)}, gt_path


def check_folders_against_ground_truth(records: list[Record], truth: tuple[dict[int, str], Path] | None) -> None:
    """Val images sorted into wnid folders must sit in the folder the ground truth names, where
    the devkit or Kaggle's solution is at hand: a sort by another label order (devkit ids read as
    sorted-wnid indices) keeps 50 images per folder and mislabels nearly all of them."""
    if truth is None:
        return
    number_to_wnid, source = truth
    wrong = []
    for r in records:
        m = VAL_NUMBER.match(r.path.name)
        want = number_to_wnid.get(int(m.group(1))) if m else None
        if want is not None and want != r.key.partition("/")[0]:
            wrong.append((r, want))
    if wrong:
        r, want = wrong[0]
        raise ValueError(
            f"{r.path}: in folder {r.key.partition('/')[0]}, but {source} labels it {want} ({len(wrong)} of "
            f"{len(records)} images sit in another class's folder); the folders were sorted by another label order: "
            f"sort them again from {source.name}, or put the images back in one flat folder, which is labelled from it"
        )


def _flat_records(
    dataset_dir: Path, files: list[str], number_to_wnid: dict[int, str], source: Path
) -> list[Record]:
    """Records for flat ``ILSVRC2012_val_XXXXXXXX.JPEG`` files labelled through ``source``."""
    wnid_index = {w: i for i, w in enumerate(imagenet_wnids())}
    out = []
    for name in files:
        m = VAL_FILE.match(name)
        if not m:
            raise ValueError(
                f"{dataset_dir / name}: not an ILSVRC2012_val_XXXXXXXX.JPEG file; move it out of the val folder"
            )
        wnid = number_to_wnid.get(int(m.group(1)))
        if wnid is None:
            raise ValueError(
                f"{dataset_dir / name}: image number {int(m.group(1))} has no label in {source}"
            )
        out.append(Record(f"{wnid}/{name}", wnid_index[wnid], dataset_dir / name))
    out.sort(key=lambda r: (r.label, r.key))
    return out


def id_view_spec(id_spec: ShiftSpec, ood_spec: ShiftSpec, per_class: int = 50) -> ShiftSpec:
    """The spec of ImageNet val scored on an OOD shift's classes (its matched ID reference).

    Size = ``per_class`` images for each ImageNet class the map uses (R/A: 10,000; ObjectNet's
    125 ImageNet classes: 6,250), matching the testbed's class-subsampled val settings.
    """
    cm = ood_spec.class_map
    if cm is None:
        raise ValueError(
            f"{ood_spec.name} has no class map onto {id_spec.label_space}; it has no class-subset ID view"
        )
    return ShiftSpec(
        name=id_view_setting(id_spec.name, ood_spec.name),
        version=id_spec.version,
        family=id_spec.family,
        label_space=id_spec.label_space,
        num_classes=len(cm),
        expected_size=per_class * len(cm.source_indices),
        class_map=cm,
        metrics=id_spec.metrics,
        main_metric=id_spec.main_metric,
        protocol={
            "view": f"{id_spec.name} restricted to {ood_spec.name} classes",
            "projection": cm.reduce,
        },
        homepage=id_spec.homepage,
        citation=id_spec.citation,
        licence=id_spec.licence,
    )


# -- held-out train slice -----------------------------------------------------------------------

HELDOUT_KEYS = "heldout_keys.txt"
MODEL_SOUPS_MASK = "imagenet_98_idxs.npy"


class ImageNetHeldout(ImageNetFamily):
    """A held-out slice of ImageNet *train* for choosing soups and WiSE-FT alphas.

    Reads ``imagenet/train/<wnid>/<file>`` restricted to ``imagenet/heldout_keys.txt`` (one
    ``wnid/file`` key per line, written by ``shiftbench make-heldout``) or, failing that, to the
    model-soups ``imagenet/imagenet_98_idxs.npy`` (a 0/1 mask over the train set in ImageFolder
    order; 1 = held out). Never a test set.
    """

    spec = ShiftSpec(
        name="imagenet-heldout",
        version="ILSVRC2012-train-heldout",
        family="imagenet",
        label_space=IMAGENET_LABEL_SPACE,
        num_classes=1000,
        expected_size=26_000,
        splits=("heldout",),
        default_split="heldout",
        protocol={"role": "selection only"},
        homepage=IMAGENET_HOMEPAGE,
        citation=IMAGENET_CITATION,
        licence="ImageNet terms of access (non-commercial research)",
    )
    folder_names = ("imagenet/train",)

    def expected_size(self, split: str | None = None) -> int | None:
        return None  # set by the chosen list: see spec_for

    def spec_for(self, root: Path) -> ShiftSpec:
        """The spec sized by the held-out list found under ``root`` (model soups' mask: 26,000)."""
        loc = self.locate(root, form="folder")
        return replace(self.spec, expected_size=len(self.index(loc.path, "heldout")))

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        keys_file = dataset_dir.parent / HELDOUT_KEYS
        mask_file = dataset_dir.parent / MODEL_SOUPS_MASK
        wnid_index = {w: i for i, w in enumerate(imagenet_wnids())}
        if keys_file.is_file():
            keys = [k for k in keys_file.read_text().splitlines() if k.strip()]
            out = []
            for k in keys:
                wnid, _, _ = k.partition("/")
                path = dataset_dir / k
                if wnid not in wnid_index or not path.is_file():
                    raise ValueError(
                        f"{keys_file}: key {k!r} is not an image under {dataset_dir}; rewrite it with shiftbench make-heldout"
                    )
                out.append(Record(k, wnid_index[wnid], path))
            return out
        if mask_file.is_file():
            records = train_records(dataset_dir)
            try:
                mask = np.load(mask_file, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{mask_file}: not a plain numpy mask ({exc})") from exc
            if mask.ndim != 1 or len(mask) != len(records):
                raise ValueError(
                    f"{mask_file}: mask has {len(mask) if mask.ndim == 1 else mask.shape} entries but {dataset_dir} holds {len(records)} train images; "
                    "the mask needs the complete ImageNet train set"
                )
            return [r for r, m in zip(records, mask, strict=True) if m]
        raise FileNotFoundError(
            f"no held-out list: looked for {keys_file} and {mask_file}. Draw one with "
            f"`shiftbench make-heldout --data-root {dataset_dir.parent.parent} --per-class 26 --seed 0`"
        )


def train_records(train_dir: Path) -> list[Record]:
    """The train set in torchvision ImageFolder order (sorted wnids, then sorted file names)."""
    wnids = imagenet_wnids()
    check_class_folders(train_dir, wnids, "ImageNet train")
    return folder_records(train_dir, wnids, range(1000), "ImageNet train")


def write_heldout_keys(data_root: Path, per_class: int, seed: int) -> Path:
    """Draw ``per_class`` train images per class with a seeded generator and save their keys."""
    if per_class < 1:
        raise ValueError("--per-class must be at least 1")
    train_dir = Path(data_root) / "imagenet" / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"{train_dir} not found: the held-out slice is drawn from ImageNet train"
        )
    rng = np.random.default_rng(seed)
    keys: list[str] = []
    for wnid in imagenet_wnids():
        files = (
            image_files(train_dir / wnid, "ImageNet train") if (train_dir / wnid).is_dir() else []
        )
        if len(files) < per_class:
            raise ValueError(
                f"{train_dir / wnid}: {len(files)} images, fewer than --per-class {per_class}"
            )
        pick = sorted(rng.choice(len(files), size=per_class, replace=False))
        keys += [f"{wnid}/{files[i]}" for i in pick]
    out = train_dir.parent / HELDOUT_KEYS
    atomic_write_text(out, "".join(k + "\n" for k in keys))
    return out
