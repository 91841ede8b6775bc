"""ObjectNet-1.0: the 113 classes that overlap ImageNet, read with the dataset's own mapping files.

Layout: ``objectnet-1.0/images/<folder>/<image>`` (313 folders) and ``objectnet-1.0/mappings/``:

- ``folder_to_objectnet_label.json``: folder -> ObjectNet label ("alarm_clock" -> "Alarm clock").
- ``objectnet_to_imagenet_1k.json``: the 113 overlapping labels -> "; "-joined ImageNet names.
- ``imagenet_to_label_2012_v2``: 1000 ImageNet names, line i = devkit class i (0-based).
- ``pytorch_to_imagenet_2012_id.json``: pytorch class index -> devkit line.

Classes are the overlapping folders sorted by folder name; label = index in that order. The other
200 folders are not part of the evaluation and are skipped. Every image loses 2 px per side
(the reference's border crop) before the model's transform.

Two protocols, registered as two shifts so results never mix: ``objectnet`` scores a 1000-way
ImageNet head with the max over each class's ImageNet logits; ``objectnet-names`` expects a
113-way head built from ObjectNet's own class names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from harness.api import ClassMap, ShiftSpec
from harness.files import file_version
from shifts.base import DatasetShift, Record, check_class_folders, folder_records
from shifts.imagenet_meta import IMAGENET_LABEL_SPACE, imagenet_templates

MAPPING_FILES = (
    "folder_to_objectnet_label.json",
    "objectnet_to_imagenet_1k.json",
    "imagenet_to_label_2012_v2",
    "pytorch_to_imagenet_2012_id.json",
)
NUM_CLASSES = 113
BORDER = 2


@dataclass(frozen=True)
class ObjectNetMapping:
    """The 113 overlapping classes in label order and their ImageNet members."""

    folders: tuple[str, ...]  # all 313 folders, for layout checks
    class_folders: tuple[str, ...]  # the overlapping folders, sorted = label order
    labels: tuple[str, ...]  # ObjectNet label of each class
    class_map: ClassMap


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: ObjectNet's mappings/ folder ships with objectnet-1.0.zip; re-extract it"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); re-extract ObjectNet's mappings/"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; re-extract ObjectNet's mappings/")
    return data


def read_mapping(mappings_dir: Path) -> ObjectNetMapping:
    """Build the class list and ImageNet members from the dataset's mapping files."""
    folder_to_label = _load_json(mappings_dir / "folder_to_objectnet_label.json")
    on_to_in = _load_json(mappings_dir / "objectnet_to_imagenet_1k.json")
    pytorch_to_line = _load_json(mappings_dir / "pytorch_to_imagenet_2012_id.json")
    names_path = mappings_dir / "imagenet_to_label_2012_v2"
    if not names_path.is_file():
        raise FileNotFoundError(f"{names_path} is missing: re-extract ObjectNet's mappings/")
    line_names = [n.strip() for n in names_path.read_text().splitlines()]
    if len(line_names) != 1000:
        raise ValueError(
            f"{names_path}: {len(line_names)} lines, expected 1000 ImageNet names; re-extract ObjectNet's mappings/"
        )
    try:
        line_to_pytorch = {int(v): int(k) for k, v in pytorch_to_line.items()}
    except (TypeError, ValueError):
        raise ValueError(
            f"{mappings_dir / 'pytorch_to_imagenet_2012_id.json'}: entries must be integer -> integer"
        ) from None
    if sorted(line_to_pytorch) != list(range(1000)) or sorted(line_to_pytorch.values()) != list(
        range(1000)
    ):
        raise ValueError(
            f"{mappings_dir / 'pytorch_to_imagenet_2012_id.json'}: not a permutation of 0..999; re-extract ObjectNet's mappings/"
        )
    by_name: dict[str, list[int]] = {}
    for line, name in enumerate(line_names):
        by_name.setdefault(name, []).append(line_to_pytorch[line])
    label_to_folder: dict[str, str] = {}
    for folder, label in folder_to_label.items():
        if label in label_to_folder:
            raise ValueError(
                f"{mappings_dir / 'folder_to_objectnet_label.json'}: label {label!r} has two folders"
            )
        label_to_folder[label] = folder
    members: dict[str, tuple[int, ...]] = {}
    for label, joined in on_to_in.items():
        if label not in label_to_folder:
            raise ValueError(
                f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: ObjectNet label {label!r} has no folder in "
                "folder_to_objectnet_label.json; the mapping files do not belong together"
            )
        idx = []
        for name in joined.split("; "):
            found = by_name.get(name.strip(), [])
            if len(found) != 1:
                what = "is not" if not found else f"matches {len(found)} lines"
                raise ValueError(
                    f"{names_path}: ImageNet name {name!r} (for {label!r}) {what} in this file; re-extract ObjectNet's mappings/"
                )
            idx.append(found[0])
        members[label_to_folder[label]] = tuple(sorted(idx))
    if len(members) != NUM_CLASSES:
        raise ValueError(
            f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: {len(members)} classes, expected {NUM_CLASSES}"
        )
    class_folders = tuple(sorted(members))
    labels = tuple(folder_to_label[f] for f in class_folders)
    cm = ClassMap(
        name="objectnet-113",
        source=IMAGENET_LABEL_SPACE,
        targets=class_folders,
        members=tuple(members[f] for f in class_folders),
        reduce="max",
    )
    cm.source_to_target()  # raises if an ImageNet class feeds two ObjectNet classes
    return ObjectNetMapping(tuple(sorted(folder_to_label)), class_folders, labels, cm)


@cache
def _cached_mapping(mappings_dir: str, stamp: tuple[str, ...]) -> ObjectNetMapping:
    return read_mapping(Path(mappings_dir))


def load_mapping(mappings_dir: Path) -> ObjectNetMapping:
    """The mapping, read once per version of the files in this process (``file_version``: a file
    rewritten with its modification time put back is read again)."""
    stamp = tuple(
        repr(file_version(mappings_dir / f)) if (mappings_dir / f).exists() else "-" for f in MAPPING_FILES
    )
    return _cached_mapping(str(mappings_dir), stamp)


_BASE_SPEC = ShiftSpec(
    name="objectnet",
    version="1.0",
    family="imagenet",
    label_space=IMAGENET_LABEL_SPACE,
    num_classes=NUM_CLASSES,
    expected_size=18_574,
    id_reference="imagenet",
    protocol={
        "head": "imagenet-1k",
        "projection": "max",  # max over each ObjectNet class's mapped ImageNet logits
        "crop": f"border-{BORDER}px",  # BORDER px cut from each side
    },
    homepage="https://objectnet.dev/",
    citation="Barbu et al., ObjectNet: A large-scale bias-controlled dataset, NeurIPS 2019",
    licence="ObjectNet licence (test-set only; no training)",
)


class ObjectNet(DatasetShift):
    """ObjectNet scored through an ImageNet head (max over each class's ImageNet logits).

    The class map comes from the user's ``mappings/`` folder: :meth:`spec_for` returns the spec
    with it, and an instance that has located its data (any read) carries it in ``self.spec``.
    The class-level ``spec`` has none.
    """

    spec = _BASE_SPEC
    folder_names = ("objectnet-1.0", "objectnet")
    border_crop = BORDER
    pack_copies = ("mappings",)

    def is_present(self, loc, split):
        if loc.form == "folder":
            return (loc.path / "images").is_dir()
        return super().is_present(loc, split)

    def mapping(self, root: Path) -> ObjectNetMapping:
        """The mapping from the dataset's ``mappings/`` (folder form, or copied next to shards)."""
        dirs = [Path(root) / n / "mappings" for n in (*self.folder_names, *self.wds_names())]
        for d in dirs:
            if d.is_dir():
                return load_mapping(d)
        looked = ", ".join(map(str, dirs))
        raise FileNotFoundError(
            f"ObjectNet mapping files not found: looked in {looked}; extract objectnet-1.0.zip there"
        )

    def spec_for(self, root: Path) -> ShiftSpec:
        """The spec with the class map read from the dataset's own mapping files."""
        return replace(type(self).spec, class_map=self.mapping(root).class_map)

    def found(self, loc) -> None:
        """Reading the data completes this instance's spec with the data's own class map."""
        mappings = loc.path / "mappings"
        if not mappings.is_dir():
            raise FileNotFoundError(
                f"{mappings} is missing: ObjectNet's mapping files must sit next to its images or shards"
            )
        self.spec = replace(type(self).spec, class_map=load_mapping(mappings).class_map)

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        m = load_mapping(dataset_dir / "mappings")
        images = dataset_dir / "images"
        check_class_folders(images, m.folders, "ObjectNet")
        return folder_records(images, m.class_folders, range(NUM_CLASSES), "ObjectNet")

    def classnames(self, root: Path | None = None) -> list[str]:
        """ObjectNet labels of the 113 classes, lower-cased, in label order (from the data's mappings)."""
        if root is None:
            raise ValueError(
                "ObjectNet's class names come from its mapping files: pass the data root"
            )
        return [label.lower() for label in self.mapping(root).labels]

    def templates(self) -> list[str]:
        return list(imagenet_templates())


class ObjectNetNames(ObjectNet):
    """ObjectNet scored by a 113-way head built from ObjectNet's own class names."""

    spec = replace(
        _BASE_SPEC,
        name="objectnet-names",
        label_space="objectnet-113",
        id_reference=None,
        protocol={
            "head": "objectnet-113-names",  # a 113-way head from ObjectNet's class names
            "projection": "none",
            "crop": f"border-{BORDER}px",
        },
    )

    def spec_for(self, root: Path) -> ShiftSpec:
        self.mapping(root)  # validate the mapping files all the same
        return self.spec

    def found(self, loc) -> None:
        pass  # class names come from the mappings or the shards' classnames.txt; no class map

    def wds_names(self) -> tuple[str, ...]:
        # Same images and labels as ``objectnet``: share its packed shards.
        return ObjectNet().wds_names()
