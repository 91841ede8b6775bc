"""Tiny datasets in each shift's exact raw layout, for tests anywhere in the project.

Every writer puts a complete dataset (all class folders, the real file names, mapping files and
metadata tables, ugly parts included) under a data root, with ``per_class`` tiny images per class,
and returns the ``(key, label)`` pairs it wrote, sorted by key. Image content is deterministic and
cheap: a flat colour chosen by the label (and the example number), encoded once per colour.
Pass the same data root to ``Shift.examples``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from shifts.imagenet_meta import imagenet_wnids, subset_class_map

SIZE = 16


def colour(label: int, i: int = 0) -> tuple[int, int, int]:
    """The deterministic colour of example ``i`` of class ``label``."""
    return (
        (label * 37 + i * 101) % 256,
        (label * 73 + 50) % 256,
        (label * 11 + i * 29 + 100) % 256,
    )


@cache
def image_bytes(
    rgb: tuple[int, int, int], fmt: str = "JPEG", size: int = SIZE, border: int = 0
) -> bytes:
    """An encoded ``size`` x ``size`` image of one colour, with an optional white border."""
    img = Image.new(
        "RGB", (size + 2 * border, size + 2 * border), (255, 255, 255) if border else rgb
    )
    if border:
        img.paste(Image.new("RGB", (size, size), rgb), (border, border))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _class_folders(
    base: Path, folders, labels, per_class: int, name_fn, fmt: str = "JPEG", border: int = 0
):
    written = []
    for folder, label in zip(folders, labels, strict=True):
        for i in range(per_class):
            data = image_bytes(colour(label, i), fmt, border=border)
            name = name_fn(folder, label, i, data)
            _write(base / folder / name, data)
            written.append((f"{folder}/{name}", label))
    return sorted(written)


# -- ImageNet family ----------------------------------------------------------------------------


def write_imagenet_val(
    root: Path, per_class: int = 1, layout: str = "folders"
) -> list[tuple[str, int]]:
    """ImageNet val: ``imagenet/val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` (``layout="folders"``) or
    the flat official layout with the devkit's ground truth and ``meta.mat`` (``layout="flat"``).

    Val numbers are spread over classes (image n is not in class n // 50), and devkit class ids
    follow a permutation of the sorted wnids, as in the real devkit.
    """
    wnids = imagenet_wnids()
    n_total = 1000 * per_class
    # image number of example i of class c: a fixed bijection onto 1..n_total
    number = {
        (c, i): (c * per_class + i) * 7919 % n_total + 1
        for c in range(1000)
        for i in range(per_class)
    }
    devkit_id = {
        c: (c * 389 + 17) % 1000 + 1 for c in range(1000)
    }  # class index -> devkit id 1..1000
    val = Path(root) / "imagenet" / "val"
    written = []
    gt = [0] * n_total
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            name = f"ILSVRC2012_val_{number[c, i]:08d}.JPEG"
            data = image_bytes(colour(c, i))
            _write(val / (f"{wnid}/{name}" if layout == "folders" else name), data)
            gt[number[c, i] - 1] = devkit_id[c]
            written.append((f"{wnid}/{name}", c))
    if layout == "flat":
        devkit = Path(root) / "imagenet" / "ILSVRC2012_devkit_t12" / "data"
        devkit.mkdir(parents=True, exist_ok=True)
        (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
            "".join(f"{g}\n" for g in gt)
        )
        write_meta_mat(devkit / "meta.mat", {devkit_id[c]: w for c, w in enumerate(wnids)})
    elif layout != "folders":
        raise ValueError(f"layout must be 'folders' or 'flat', not {layout!r}")
    return sorted(written)


def write_meta_mat(path: Path, id_to_wnid: dict[int, str]) -> None:
    """The devkit's ``meta.mat``: leaf synsets (num_children 0) plus two internal synsets."""
    from scipy.io import savemat

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [(i, w, 0) for i, w in sorted(id_to_wnid.items())] + [
        (1001, "n00001740", 2),
        (1002, "n00002137", 5),
    ]
    arr = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, (i, w, nc) in enumerate(rows):
        arr[k, 0] = (
            np.array([[i]], dtype=np.uint16),
            np.array([w]),
            np.array([f"words {w}"]),
            np.array(["gloss"]),
            np.array([[nc]], dtype=np.uint8),
            np.zeros((1, 0)),
            np.array([[0]]),
            np.array([[1300]]),
        )
    savemat(str(path), {"synsets": arr})


def write_imagenet_train(root: Path, per_class: int = 3) -> list[tuple[str, int]]:
    """ImageNet train: ``imagenet/train/<wnid>/<wnid>_<n>.JPEG``."""
    wnids = imagenet_wnids()
    return _class_folders(
        Path(root) / "imagenet" / "train",
        wnids,
        range(1000),
        per_class,
        lambda f, y, i, d: f"{f}_{i * 13 + 1}.JPEG",
    )


V2_FOLDERS = {
    "matched-frequency": "imagenetv2/ImageNetV2-matched-frequency",
    "threshold-0.7": "imagenetv2-threshold0.7-format-val",
    "top-images": "imagenetv2/imagenetv2-top-images-format-val",
}


def write_imagenetv2(
    root: Path, variant: str = "matched-frequency", per_class: int = 1, folder: str | None = None
) -> list[tuple[str, int]]:
    """ImageNetV2: folders ``0``..``999`` (the class index), files named by content hash ``.jpeg``."""
    base = Path(root) / (folder or V2_FOLDERS[variant])
    return _class_folders(
        base,
        [str(i) for i in range(1000)],
        range(1000),
        per_class,
        lambda f, y, i, d: hashlib.sha1(d + f"{f}/{i}".encode()).hexdigest() + ".jpeg",
    )


def _write_subset(root: Path, which: str, per_class: int, fmt: str) -> list[tuple[str, int]]:
    base = Path(root) / f"imagenet-{which}"
    wnids = subset_class_map(which).targets
    out = _class_folders(
        base,
        wnids,
        range(200),
        per_class,
        lambda f, y, i, d: f"{fmt.lower()}_{i}.{'jpg' if fmt == 'JPEG' else 'png'}",
        fmt,
    )
    (base / "README.txt").write_text(f"ImageNet-{which.upper()}: 200 ImageNet classes\n")
    return out


def write_imagenet_r(root: Path, per_class: int = 1) -> list[tuple[str, int]]:
    """ImageNet-R: ``imagenet-r/<wnid>/*.jpg`` for the 200 R wnids, plus the authors' README.txt."""
    return _write_subset(root, "r", per_class, "JPEG")


def write_imagenet_a(root: Path, per_class: int = 1) -> list[tuple[str, int]]:
    """ImageNet-A: ``imagenet-a/<wnid>/*.jpg`` for the 200 A wnids, plus README.txt."""
    return _write_subset(root, "a", per_class, "JPEG")


def write_imagenet_sketch(root: Path, per_class: int = 1) -> list[tuple[str, int]]:
    """ImageNet-Sketch: ``sketch/<wnid>/sketch_<n>.JPEG`` for all 1000 wnids."""
    return _class_folders(
        Path(root) / "sketch",
        imagenet_wnids(),
        range(1000),
        per_class,
        lambda f, y, i, d: f"sketch_{i}.JPEG",
    )


# -- ObjectNet ------------------------------------------------------------------------------------

#: Folders of the fixture's overlapping classes whose ImageNet members are two classes.
OBJECTNET_MULTI = 12
OBJECTNET_EXTRA_FOLDERS = ("zz_not_in_imagenet", "air_freshener", "Bench")


def objectnet_layout() -> dict:
    """The fixture's ObjectNet classes: folder, label, and ImageNet (pytorch) members.

    113 overlapping folders ``c000``..``c112`` whose labels are listed in the mapping JSON in
    reverse order (label order must come from the sorted folders, not the file); the first 12
    collect two ImageNet classes (125 in all); plus non-overlapping folders to skip.
    """
    classes = []
    nxt = 0
    for k in range(113):
        members = [nxt * 8 + 3] + ([nxt * 8 + 7] if k < OBJECTNET_MULTI else [])
        nxt += 1
        classes.append({"folder": f"c{k:03d}", "label": f"Object {k:03d}", "members": members})
    return {"classes": classes, "extra": list(OBJECTNET_EXTRA_FOLDERS)}


def devkit_line(pytorch_index: int) -> int:
    """The fixture's devkit line of a pytorch class index (a bijection of 0..999)."""
    return (pytorch_index * 7 + 3) % 1000


def write_objectnet(
    root: Path, per_class: int = 1, folder: str = "objectnet-1.0"
) -> list[tuple[str, int]]:
    """ObjectNet-1.0: ``objectnet-1.0/images/<folder>/<hash>.png`` with a 2 px white border and the
    four mapping files in ``objectnet-1.0/mappings/``. Only overlapping folders are returned.

    The ImageNet name list has a duplicated name ("crane", as the real devkit does) that the
    mapping does not use.
    """
    base = Path(root) / folder
    layout = objectnet_layout()
    mappings = base / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    names = [f"imagenet class {line:03d}" for line in range(1000)]
    used_lines = {devkit_line(m) for c in layout["classes"] for m in c["members"]}
    a, b = sorted(set(range(1000)) - used_lines)[-2:]
    names[a] = names[b] = "crane"
    folder_to_label = {c["folder"]: c["label"] for c in layout["classes"]}
    folder_to_label.update({f: f.replace("_", " ").capitalize() for f in layout["extra"]})
    on_to_in = {
        c["label"]: "; ".join(names[devkit_line(m)] for m in c["members"])
        for c in reversed(layout["classes"])
    }
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label, indent=1))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps(on_to_in, indent=1))
    (mappings / "imagenet_to_label_2012_v2").write_text("".join(n + "\n" for n in names))
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(
        json.dumps({str(p): devkit_line(p) for p in range(1000)})
    )
    images = base / "images"

    def name(f, y, i, d):
        return hashlib.sha1(d + f"{f}/{i}".encode()).hexdigest()[:16] + ".png"

    written = _class_folders(
        images,
        [c["folder"] for c in layout["classes"]],
        range(113),
        per_class,
        name,
        "PNG",
        border=2,
    )
    _class_folders(
        images,
        layout["extra"],
        [900 + j for j in range(len(layout["extra"]))],
        per_class,
        name,
        "PNG",
        border=2,
    )
    return written


# -- WILDS ---------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list], index: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(([""] if index else []) + header)
        for i, r in enumerate(rows):
            w.writerow(([i] if index else []) + r)


def _by_split(rows: list[tuple[str, str, int]], split: str) -> list[tuple[str, int]]:
    return sorted((k, y) for s, k, y in rows if s == split)


#: iWildCam rows: (split, location, y); every split, labels up to 181, two test locations.
IWILDCAM_ROWS = [
    ("train", 0, 0),
    ("train", 0, 3),
    ("val", 5, 3),
    ("val", 6, 181),
    ("test", 7, 0),
    ("test", 7, 3),
    ("test", 8, 3),
    ("test", 8, 24),
    ("test", 8, 181),
    ("id_val", 0, 3),
    ("id_test", 1, 24),
]


def write_iwildcam(root: Path, split: str = "test") -> list[tuple[str, int]]:
    """iWildCam v2.0: ``iwildcam_v2.0/metadata.csv`` written with its unnamed index column, split
    names as strings, images (JPEG) under ``train/`` for every split, and ``categories.csv``."""
    base = Path(root) / "iwildcam_v2.0"
    header = ["split", "location_remapped", "location", "sequence_remapped", "seq_id", "y", "category_id",
              "datetime", "filename", "image_id"]  # fmt: skip
    rows, written = [], []
    for i, (s, loc, y) in enumerate(IWILDCAM_ROWS):
        fname = f"{8000 + i:04x}a1b2-{i}.jpg"
        rows.append(
            [
                s,
                loc,
                loc + 100,
                i,
                f"seq{i}",
                y,
                y * 2,
                f"2013-06-0{i % 9 + 1} 10:00:00",
                fname,
                f"img{i}",
            ]
        )
        _write(base / "train" / fname, image_bytes(colour(y, i)))
        written.append((s, f"train/{fname}", y))
    _write_csv(base / "metadata.csv", header, rows, index=True)
    _write_csv(
        base / "categories.csv",
        ["y", "category_id", "name"],
        [[y, y * 2, f"Species {y}"] for y in range(182)],
    )
    (base / "RELEASE_v2.0.txt").write_text("v2.0\n")
    return _by_split(written, split)


#: FMoW rows: (original split, category, country code, timestamp); "seq" rows are sequestered.
FMOW_ROWS = [
    ("train", "airport", "USA", "2010-05-01T10:00:00Z", "train"),  # 0 train
    ("seq", "zoo", "FRA", "2017-01-01T00:00:00Z", None),  # 1 dropped, but image numbers count it
    ("train", "zoo", "FRA", "2014-03-01T10:00:00Z", None),  # 2 train but in the OOD years: no split
    ("val", "barn", "KEN", "2012-12-31T23:59:59Z", "id_val"),  # 3 id_val
    ("val", "barn", "KEN", "2013-01-01T00:00:00Z", "val"),  # 4 val (OOD)
    (
        "test",
        "dam",
        "FRA",
        "2015-06-01T00:00:00.123Z",
        None,
    ),  # 5 neither (OOD years, test origin < 2016)
    ("test", "airport", "USA", "2016-01-01T00:00:00Z", "test"),  # 6 test, Americas
    ("test", "zoo", "USA", "2016-02-01T00:00:00Z", "test"),  # 7 test, Americas
    ("seq", "dam", "USA", "2016-02-01T00:00:00Z", None),  # 8 dropped
    ("test", "dam", "FRA", "2017-03-01T00:00:00Z", "test"),  # 9 test, Europe
    ("test", "zoo", "XKX", "2016-07-01T00:00:00Z", "test"),  # 10 test, Other (code not in mapping)
    ("test", "barn", "AUS", "2017-12-31T00:00:00Z", "test"),  # 11 test, Oceania
    ("test", "airport", "CHN", "2012-01-01T00:00:00Z", "id_test"),  # 12 id_test
]
FMOW_COUNTRIES = [("United States", "USA", "Americas"), ("France", "FRA", "Europe"), ("Kenya", "KEN", "Africa"),
                  ("Australia", "AUS", "Oceania"), ("China", "CHN", "Asia")]  # fmt: skip


def write_fmow(root: Path, split: str = "test") -> list[tuple[str, int]]:
    """FMoW v1.1: ``fmow_v1.1/rgb_metadata.csv`` (with sequestered ``seq`` rows that still count
    for the image numbers), ``country_code_mapping.csv`` and ``images/rgb_img_<row>.png``."""
    from shifts.wilds import fmow_categories

    base = Path(root) / "fmow_v1.1"
    cats = {c: i for i, c in enumerate(fmow_categories())}
    header = ["split", "img_filename", "img_path", "spatial_reference", "epsg", "category", "visible",
              "img_width", "img_height", "country_code", "cloud_cover", "timestamp", "lat_lon"]  # fmt: skip
    rows, written = [], []
    for i, (s, cat, code, ts, official) in enumerate(FMOW_ROWS):
        rows.append(
            [
                s,
                f"{cat}_{i}_rgb.jpg",
                f"{s}/{cat}/{cat}_{i}",
                "WGS84",
                4326,
                cat,
                True,
                224,
                224,
                code,
                0,
                ts,
                "(0, 0)",
            ]
        )
        if s != "seq":
            _write(base / "images" / f"rgb_img_{i}.png", image_bytes(colour(cats[cat], i), "PNG"))
            written.append((official, f"images/rgb_img_{i}.png", cats[cat]))
    _write_csv(base / "rgb_metadata.csv", header, rows)
    _write_csv(base / "country_code_mapping.csv", ["name", "alpha-2", "alpha-3", "region"],
               [[n, a3[:2], a3, r] for n, a3, r in FMOW_COUNTRIES])  # fmt: skip
    (base / "RELEASE_v1.1.txt").write_text("v1.1\n")
    return _by_split(written, split)


#: Camelyon17 rows: (patient, node, x, y, tumor, slide, center, split code).
CAMELYON_ROWS = [
    ("004", 4, 3328, 21088, 1, 4, 0, 0),  # train
    ("004", 4, 3328, 21120, 0, 4, 0, 1),  # id_val
    ("010", 0, 1000, 2000, 0, 10, 1, 0),  # hospital 1: val, whatever the code
    ("021", 3, 96, 192, 1, 23, 2, 0),  # hospital 2: test
    ("021", 3, 128, 192, 0, 23, 2, 1),  # hospital 2: test even with code 1
    ("039", 1, 64, 64, 1, 39, 2, 0),  # test, another slide
    ("072", 0, 5, 7, 0, 44, 4, 0),  # train
]


def write_camelyon17(root: Path, split: str = "test") -> list[tuple[str, int]]:
    """Camelyon17 v1.0: ``camelyon17_v1.0/metadata.csv`` (unnamed index column, zero-padded
    patient ids) and ``patches/patient_P_node_N/patch_patient_P_node_N_x_X_y_Y.png``."""
    base = Path(root) / "camelyon17_v1.0"
    rows, written = [], []
    for i, (p, n, x, y, tumor, slide, center, code) in enumerate(CAMELYON_ROWS):
        rows.append([p, n, x, y, tumor, slide, center, code])
        key = f"patches/patient_{p}_node_{n}/patch_patient_{p}_node_{n}_x_{x}_y_{y}.png"
        _write(base / key, image_bytes(colour(tumor, i), "PNG"))
        s = {1: "val", 2: "test"}.get(center, ("train", "id_val")[code])
        written.append((s, key, tumor))
    _write_csv(
        base / "metadata.csv",
        ["patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split"],
        rows,
        index=True,
    )
    (base / "RELEASE_v1.0.txt").write_text("v1.0\n")
    return _by_split(written, split)


# -- user datasets and the writer table ---------------------------------------------------------

#: Class folders of the ``folder`` fixture: ImageFolder sorts them as text ("10" before "2").
FOLDER_CLASSES = ("2", "10", "Cat", "dog")


def write_folder(root: Path, per_class: int = 2) -> list[tuple[str, int]]:
    """A user ImageFolder dataset at ``root`` itself: labels follow sorted names ("10", "2", "Cat", "dog")."""
    order = sorted(FOLDER_CLASSES)
    return _class_folders(
        Path(root), order, range(len(order)), per_class, lambda f, y, i, d: f"img_{i}.png", "PNG"
    )


def write_imagenet_heldout(root: Path, per_class: int = 2) -> list[tuple[str, int]]:
    """ImageNet train with ``per_class`` images and a held-out list of the first image of each class."""
    train = write_imagenet_train(root, per_class)
    picked = [kv for kv in train if kv[0].endswith("_1.JPEG")]
    (Path(root) / "imagenet" / "heldout_keys.txt").write_text("".join(k + "\n" for k, _ in picked))
    return picked


#: The fixture writer of every built-in shift that reads a fixed layout under the data root.
WRITERS = {
    "imagenet": write_imagenet_val,
    "imagenet-heldout": write_imagenet_heldout,
    "imagenetv2": lambda root: write_imagenetv2(root, "matched-frequency"),
    "imagenetv2-threshold-0.7": lambda root: write_imagenetv2(root, "threshold-0.7"),
    "imagenetv2-top-images": lambda root: write_imagenetv2(root, "top-images"),
    "imagenet-r": write_imagenet_r,
    "imagenet-a": write_imagenet_a,
    "imagenet-sketch": write_imagenet_sketch,
    "objectnet": write_objectnet,
    "objectnet-names": write_objectnet,
    "iwildcam": write_iwildcam,
    "fmow": write_fmow,
    "camelyon17": write_camelyon17,
    "folder": write_folder,
}
