"""Any user dataset: ``folder`` (torchvision ImageFolder layout), ``folder-unlabeled`` (images with
no labels) and ``wds`` (CLIP_benchmark shards).

For these two the data root *is* the dataset folder. ``folder`` reads ``<root>/<class>/<image>``
with classes in sorted-name order (ImageFolder's convention: label = index of the folder name in
sorted order, so a folder ``10`` sorts before ``2``; name classes accordingly). ``wds`` reads
``<root>/<split>/nshards.txt`` shards with ``<root>/classnames.txt``. Class counts and names come
from the data, so :meth:`spec_for` gives the complete spec.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from harness.api import UNLABELED, ShiftSpec
from shifts import wds
from shifts.base import DatasetShift, Location, Record, folder_records, list_dir
from shifts.imagenet_meta import imagenet_templates
from shifts.images import is_image_file


def user_metrics(num_classes: int) -> tuple[str, ...]:
    """Top-5 only where there are more than five classes to choose from."""
    return ("top1", "top5") if num_classes > 5 else ("top1",)


class _UserShift(DatasetShift):
    def templates(self) -> list[str]:
        return list(imagenet_templates())  # CLIP_benchmark's fallback for unknown datasets

    def _check_label(self, label: int, where: str) -> None:
        if label < 0:
            raise ValueError(f"{where}: negative label {label}")


class ImageFolderShift(_UserShift):
    spec = ShiftSpec(
        name="folder",
        version="user",
        family="user",
        label_space="folder",
        num_classes=0,
        expected_size=0,
        protocol={"labels": "sorted folder names (ImageFolder)"},
    )

    def candidates(self, root: Path) -> list[Location]:
        return [Location("folder", Path(root))]

    def classes(self, dataset_dir: Path) -> list[str]:
        if not Path(dataset_dir).is_dir():
            raise FileNotFoundError(
                f"{dataset_dir}: no such folder; for the folder shift --data-root is the dataset "
                "folder itself, holding <class>/<image>"
            )
        dirs, files = list_dir(dataset_dir)
        if not dirs:
            raise FileNotFoundError(
                f"{dataset_dir}: no class folders; the folder shift reads <root>/<class>/<image>"
            )
        if files:
            raise ValueError(
                f"{dataset_dir / files[0]}: unexpected file next to the class folders; move it out"
            )
        hidden = [d for d in dirs if d.startswith(".")]
        if hidden:  # .ipynb_checkpoints, .Trashes, ...: sorted first, it would shift every label
            raise ValueError(
                f"{dataset_dir / hidden[0]}: a hidden folder next to the class folders would be read as "
                "a class (the first, moving every other label by one); move it out"
            )
        return dirs

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        names = self.classes(dataset_dir)
        records = folder_records(
            dataset_dir, names, range(len(names)), f"folder dataset {dataset_dir}"
        )
        empty = sorted(set(range(len(names))) - {r.label for r in records})
        if empty:  # torchvision's ImageFolder refuses these too
            raise ValueError(
                f"{dataset_dir / names[empty[0]]}: class folder with no images ({len(empty)} such); "
                "an empty class still takes a label and a place in a zero-shot head: add its images or move it out"
            )
        return records

    def classnames(self, root: Path | None = None) -> list[str]:
        if root is None:
            raise ValueError("a folder dataset's class names are its folder names: pass its root")
        return [c.replace("_", " ") for c in self.classes(Path(root))]

    def spec_for(self, root: Path) -> ShiftSpec:
        root = Path(root)
        n = len(self.index(root, "test"))
        k = len(self.classes(root))
        return replace(
            self.spec,
            name=f"folder:{root.name}",
            label_space=f"folder:{root.name}",
            num_classes=k,
            expected_size=n,
            metrics=user_metrics(k),
        )


class UnlabeledFolderShift(_UserShift):
    """Unlabelled images for label-free analyses (``shiftbench estimate``): every image file under
    the root, at any depth, key = its path relative to the root. Models answer in ImageNet's label
    space; predictions are stored with the label :data:`harness.api.UNLABELED` and never scored.
    ``shiftbench run --shifts folder --unlabeled`` selects this shift."""

    spec = ShiftSpec(
        name="folder-unlabeled",
        version="user",
        family="user",
        label_space="imagenet-1k",
        num_classes=1000,
        expected_size=0,
        metrics=(),
        protocol={"labels": "none"},
    )

    def candidates(self, root: Path) -> list[Location]:
        return [Location("folder", Path(root))]

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        dataset_dir = Path(dataset_dir)
        if not dataset_dir.is_dir():
            raise FileNotFoundError(f"{dataset_dir}: no such folder of unlabelled images")
        records = []
        for here, dirs, files in os.walk(dataset_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if is_image_file(name) and not name.startswith("."):
                    path = Path(here) / name
                    records.append(Record(path.relative_to(dataset_dir).as_posix(), UNLABELED, path))
        if not records:
            raise FileNotFoundError(f"{dataset_dir}: no image files (.jpg, .png, ...) at any depth")
        return sorted(records, key=lambda r: r.key)

    def classnames(self, root: Path | None = None) -> list[str]:
        from shifts.imagenet_meta import imagenet_classnames

        return list(imagenet_classnames())

    def _check_label(self, label: int, where: str) -> None:
        if label != UNLABELED:
            raise ValueError(f"{where}: an unlabelled dataset has label {label}")

    def spec_for(self, root: Path) -> ShiftSpec:
        root = Path(root)
        return replace(self.spec, name=f"folder-unlabeled:{root.name}", expected_size=len(self.index(root, "test")))


class WebDatasetShift(_UserShift):
    spec = ShiftSpec(
        name="wds",
        version="user",
        family="user",
        label_space="wds",
        num_classes=0,
        expected_size=0,
        splits=("test", "train", "val"),
        protocol={"labels": "cls of each sample"},
    )

    def candidates(self, root: Path) -> list[Location]:
        return [Location("wds", Path(root))]

    def classnames(self, root: Path | None = None) -> list[str]:
        if root is None:
            raise ValueError("a webdataset's class names are in its classnames.txt: pass its root")
        path = Path(root) / "classnames.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: CLIP_benchmark webdatasets list one class name per line there"
            )
        return wds.read_lines(path)

    def templates_for(self, root: Path) -> list[str]:
        path = Path(root) / "zeroshot_classification_templates.txt"
        return wds.read_lines(path) if path.is_file() else self.templates()

    def spec_for(self, root: Path, split: str | None = None) -> ShiftSpec:
        root = Path(root)
        split = self.resolve_split(split)
        manifest = root / split / "manifest.json"
        n = 0
        if manifest.is_file():
            import json

            n = int(json.loads(manifest.read_text())["n"])
        k = len(self.classnames(root))
        return replace(
            self.spec,
            name=f"wds:{root.name}",
            label_space=f"wds:{root.name}",
            num_classes=k,
            expected_size=n,  # 0 without a manifest: unknown, so the engine checks no count
            metrics=user_metrics(k),
        )
