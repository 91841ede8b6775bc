"""WILDS: iWildCam v2.0, FMoW v1.1 and Camelyon17 v1.0 from their official extracted folders.

Splits, labels and metrics follow the WILDS package exactly (see docs/datasets.md):

- iWildCam: ``metadata.csv`` (with an unnamed index column) names the split of every row
  (train/val/test/id_val/id_test; val/test are new camera locations); images live in ``train/``.
  182 classes; official metric macro-F1 over the classes present in the true labels.
- FMoW: ``rgb_metadata.csv`` rows, image ``images/rgb_img_<row>.png`` where ``<row>`` counts the
  sequestered (``seq``) rows too; the official split is by time (OOD test: original test taken
  from 2016 on; OOD val: original val from 2013 to 2015; ID: before 2013). Region from
  ``country_code_mapping.csv`` (unknown codes: "Other"); official metric worst-region accuracy
  leaving out "Other".
- Camelyon17: ``metadata.csv`` split codes 0/1 = train/id_val, then hospital 1 is the OOD val and
  hospital 2 the OOD test, whatever the code says. Patient ids are strings ("004"): the zero
  padding is part of the patch path. Official metric: accuracy.

Each shift's ID reference is its ID split as the WILDS paper compares it (iWildCam and FMoW
``id_test``, Camelyon17 ``id_val``), scored in the same run as the setting ``<shift>:<split>``.
"""

from __future__ import annotations

import csv
import os
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path

from harness.api import ShiftSpec
from shifts.base import DatasetShift, Record

WILDS_HOMEPAGE = "https://wilds.stanford.edu/"
WILDS_CITATION = "Koh et al., WILDS: A Benchmark of in-the-Wild Distribution Shifts, ICML 2021"


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings (no type guessing: "004" stays "004")."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; re-extract the dataset archive")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: columns {missing} are missing (found {reader.fieldnames}); is this the right file?"
            )
        return list(reader)


def _int(row: dict[str, str], col: str, where: str) -> int:
    try:
        return int(float(row[col]))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {col!r} is {row[col]!r}, not an integer") from None


def _check_files(records: list[Record], dataset_dir: Path) -> list[Record]:
    missing = [r for r in records if not os.path.isfile(r.path)]
    if missing:
        raise ValueError(
            f"{missing[0].path}: image listed in the metadata is missing ({len(missing)} missing in {dataset_dir}); "
            "re-extract the dataset archive"
        )
    return records


class WildsShift(DatasetShift):
    """A WILDS dataset folder is present when its metadata table is."""

    #: The table listing every image with its split and label.
    metadata_file = "metadata.csv"
    #: Prompt templates for zero-shot heads.
    template_list: tuple[str, ...] = ()

    def is_present(self, loc, split):
        if loc.form == "folder":
            return (loc.path / self.metadata_file).is_file()
        return super().is_present(loc, split)

    def templates(self) -> list[str]:
        return list(self.template_list)


# -- iWildCam -------------------------------------------------------------------------------------

IWILDCAM_SPLITS = ("train", "val", "test", "id_val", "id_test")
#: Images per split, from the dataset table of the WILDS paper (Koh et al., arXiv:2012.07421,
#: appendix); 203,029 labelled images in all.
IWILDCAM_SIZES = {
    "train": 129_809,
    "val": 14_961,
    "test": 42_791,
    "id_val": 7_314,
    "id_test": 8_154,
}


class IWildCam(WildsShift):
    spec = ShiftSpec(
        name="iwildcam",
        version="2.0",
        family="wilds",
        label_space="iwildcam-182",
        num_classes=182,
        expected_size=IWILDCAM_SIZES["test"],
        metrics=("top1", "macro_f1", "macro_recall"),
        main_metric="macro_f1",
        id_reference="iwildcam:id_test",
        group_by=("location",),
        splits=IWILDCAM_SPLITS,
        default_split="test",
        protocol={"split": "test"},  # the official OOD test: camera locations unseen in training
        homepage=WILDS_HOMEPAGE,
        citation="Beery et al., The iWildCam 2021 Competition Dataset; " + WILDS_CITATION,
        licence="CDLA-Permissive-1.0",
    )
    folder_names = ("iwildcam_v2.0", "wilds/iwildcam_v2.0")
    expected_sizes = IWILDCAM_SIZES
    template_list = ("a photo of {c}.", "{c} in the wild.")

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        path = dataset_dir / "metadata.csv"
        rows = read_csv(path, ("split", "y", "filename", "location_remapped"))
        out = []
        for i, row in enumerate(rows):
            where = f"{path} row {i + 2}"
            if row["split"] not in IWILDCAM_SPLITS:
                raise ValueError(
                    f"{where}: split {row['split']!r} is not one of {IWILDCAM_SPLITS}; re-extract iwildcam_v2.0"
                )
            if row["split"] != split:
                continue
            y = _int(row, "y", where)
            if not 0 <= y < 182:
                raise ValueError(f"{where}: label y={y} outside 0..181")
            key = f"train/{row['filename']}"
            out.append(
                Record(
                    key, y, dataset_dir / key, {"location": _int(row, "location_remapped", where)}
                )
            )
        return _check_files(out, dataset_dir)

    def classnames(self, root: Path | None = None) -> list[str]:
        """English names by label from the dataset folder's ``labels.csv`` (WiSE-FT's table:
        y, category_id, name, english) or, failing that, ``categories.csv`` (y, name); lower-cased."""
        if root is None:
            raise ValueError(
                "iWildCam's class names come from the dataset folder: pass the data root"
            )
        loc = self.locate(root, "test", form="folder")
        for fname, col in (("labels.csv", "english"), ("categories.csv", "name")):
            path = loc.path / fname
            if path.is_file():
                rows = read_csv(path, ("y", col))
                names: dict[int, str] = {}
                for i, row in enumerate(rows):
                    y = _int(row, "y", f"{path} row {i + 2}")
                    if 0 <= y < 182:
                        names[y] = row[col].strip().lower()
                if sorted(names) != list(range(182)):
                    raise ValueError(
                        f"{path}: names for {len(names)} of the 182 labels; need every y in 0..181"
                    )
                return [names[y] for y in range(182)]
        raise FileNotFoundError(
            f"no class-name table in {loc.path}: put WiSE-FT's labels.csv (y, english) or categories.csv (y, name) there"
        )


# -- FMoW ------------------------------------------------------------------------------------------

FMOW_SPLITS = ("train", "id_val", "id_test", "val", "test")
#: Images per split of the official ``time_after_2016`` split, from the WILDS paper's dataset
#: table; 141,696 in all (rows of later years in the original train split are in none).
FMOW_SIZES = {"train": 76_863, "id_val": 11_483, "id_test": 11_327, "val": 19_915, "test": 22_108}


@cache
def fmow_categories() -> tuple[str, ...]:
    text = resources.files("shifts.data").joinpath("fmow_categories.txt").read_text()
    cats = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(cats) == 62
    return cats


def _utc(ts: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(ts.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: timestamp {ts!r} is not ISO 8601") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def fmow_split(original: str, t: datetime) -> str | None:
    """WILDS' official ``time_after_2016`` split of a row (None: not in any split)."""
    test_ood = t >= datetime(2016, 1, 1, tzinfo=timezone.utc)
    val_ood = not test_ood and t >= datetime(2013, 1, 1, tzinfo=timezone.utc)
    if original == "test":
        return "test" if test_ood else (None if val_ood else "id_test")
    if original == "val":
        return "val" if val_ood else (None if test_ood else "id_val")
    if original == "train":
        return None if (test_ood or val_ood) else "train"
    return None


class FMoW(WildsShift):
    spec = ShiftSpec(
        name="fmow",
        version="1.1",
        family="wilds",
        label_space="fmow-62",
        num_classes=62,
        expected_size=FMOW_SIZES["test"],
        metrics=("top1", "acc:region", "worst_acc:region!Other", "acc:year", "worst_acc:year"),
        main_metric="worst_acc:region!Other",
        id_reference="fmow:id_test",
        group_by=("region", "year"),
        splits=FMOW_SPLITS,
        default_split="test",
        protocol={
            "split": "test",  # the official OOD test: images from 2016 on
            "split_scheme": "time_after_2016",
            "worst_region": "excludes Other and empty regions",
        },
        homepage=WILDS_HOMEPAGE,
        citation="Christie et al., Functional Map of the World, CVPR 2018; " + WILDS_CITATION,
        licence="FMoW Challenge Public License",
    )
    folder_names = ("fmow_v1.1", "wilds/fmow_v1.1")
    expected_sizes = FMOW_SIZES
    metadata_file = "rgb_metadata.csv"
    template_list = (
        "satellite photo of a {c}.",
        "aerial photo of a {c}.",
        "satellite photo of a {c} in Asia.",
        "aerial photo of a {c} in Asia.",
        "satellite photo of a {c} in Africa.",
        "aerial photo of a {c} in Africa.",
        "satellite photo of a {c} in the Americas.",
        "aerial photo of a {c} in the Americas.",
        "satellite photo of a {c} in Europe.",
        "aerial photo of a {c} in Europe.",
        "satellite photo of a {c} in Oceania.",
        "aerial photo of a {c} in Oceania.",
        "a photo of a {c}.",
        "{c}.",
    )

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        path = dataset_dir / "rgb_metadata.csv"
        rows = read_csv(path, ("split", "category", "country_code", "timestamp"))
        codes = read_csv(dataset_dir / "country_code_mapping.csv", ("alpha-3", "region"))
        to_region = {c["alpha-3"]: c["region"] for c in codes if c["region"]}
        cat_index = {c: i for i, c in enumerate(fmow_categories())}
        out = []
        for i, row in enumerate(rows):  # i counts sequestered rows: it names the image file
            where = f"{path} row {i + 2}"
            if row["split"] == "seq":
                continue
            if row["split"] not in ("train", "val", "test"):
                raise ValueError(
                    f"{where}: split {row['split']!r} is not train/val/test/seq; re-extract fmow_v1.1"
                )
            t = _utc(row["timestamp"], where)
            if fmow_split(row["split"], t) != split:
                continue
            if row["category"] not in cat_index:
                raise ValueError(
                    f"{where}: category {row['category']!r} is not one of FMoW's 62 classes"
                )
            year = t.year - 2002 if 2002 <= t.year <= 2017 else -1
            meta = {"region": to_region.get(row["country_code"], "Other"), "year": year}
            key = f"images/rgb_img_{i}.png"
            out.append(Record(key, cat_index[row["category"]], dataset_dir / key, meta))
        return _check_files(out, dataset_dir)

    def classnames(self, root: Path | None = None) -> list[str]:
        """The 62 WILDS categories, underscores kept (as WILDS and WiSE-FT name them)."""
        return list(fmow_categories())


# -- Camelyon17 ------------------------------------------------------------------------------------

CAMELYON_SPLITS = ("train", "id_val", "val", "test")
#: Patches per split, from the WILDS paper's dataset table; 455,954 in all.
CAMELYON_SIZES = {"train": 302_436, "id_val": 33_560, "val": 34_904, "test": 85_054}
CAMELYON_OOD_HOSPITALS = {1: "val", 2: "test"}


class Camelyon17(WildsShift):
    spec = ShiftSpec(
        name="camelyon17",
        version="1.0",
        family="wilds",
        label_space="camelyon17-2",
        num_classes=2,
        expected_size=CAMELYON_SIZES["test"],
        metrics=("top1", "worst_acc:slide"),
        main_metric="top1",
        id_reference="camelyon17:id_val",
        group_by=("hospital", "slide"),
        splits=CAMELYON_SPLITS,
        default_split="test",
        protocol={"split": "test"},  # the official OOD test: hospital 2 (val: hospital 1)
        homepage=WILDS_HOMEPAGE,
        citation="Bandi et al., From Detection of Individual Metastases to Classification of Lymph Node Status, IEEE TMI 2018; "
        + WILDS_CITATION,
        licence="CC0-1.0",
    )
    folder_names = ("camelyon17_v1.0", "wilds/camelyon17_v1.0")
    expected_sizes = CAMELYON_SIZES
    template_list = ("this is a photo of {c}",)

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        path = dataset_dir / "metadata.csv"
        rows = read_csv(
            path, ("patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split")
        )
        out = []
        for i, row in enumerate(rows):
            where = f"{path} row {i + 2}"
            hospital = _int(row, "center", where)
            code = _int(row, "split", where)
            if code not in (0, 1):
                raise ValueError(
                    f"{where}: split code {code} is not 0 (train) or 1 (id_val); re-extract camelyon17_v1.0"
                )
            row_split = CAMELYON_OOD_HOSPITALS.get(hospital, ("train", "id_val")[code])
            if row_split != split:
                continue
            p, n = row["patient"], row["node"]
            x, y = _int(row, "x_coord", where), _int(row, "y_coord", where)
            key = f"patches/patient_{p}_node_{n}/patch_patient_{p}_node_{n}_x_{x}_y_{y}.png"
            label = _int(row, "tumor", where)
            if label not in (0, 1):
                raise ValueError(f"{where}: tumor={label}, expected 0 or 1")
            out.append(
                Record(
                    key,
                    label,
                    dataset_dir / key,
                    {"hospital": hospital, "slide": _int(row, "slide", where)},
                )
            )
        return _check_files(out, dataset_dir)

    def classnames(self, root: Path | None = None) -> list[str]:
        """Authored for this project (WILDS ships none): label 0 normal tissue, 1 tumour."""
        return ["lymph node", "lymph node containing metastatic tumor tissue"]
