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
    names[500] = names[900] = "crane"
    used_lines = {devkit_line(m) for c in layout["classes"] for m in c["members"]}
    assert not used_lines & {500, 900}
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
