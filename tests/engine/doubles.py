"""Tiny shifts, classifiers and a scorer for engine tests.

Images are solid-colour PNGs whose red value encodes what ``ColourNet`` will predict:
red = 60 * p + 10 makes class p the nearest centre, so the expected accuracy of every
fixture is known by construction and written out by hand in the tests.

``toy`` (ID, 4 classes): folders ``0..3`` named by class index (the ImageNetV2 rule: the
label is ``int(folder)``). ``toy-sub`` (OOD, 2 classes): folders ``b`` and ``d`` (sorted, as
ImageNet-R's wnids), mapped onto toy classes 1 and 3, with ``id_reference="toy"``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.api import Classifier, ClassMap, Example, LazyExample, PreprocessSpec, Shift, ShiftSpec

# (label, encoded prediction) per image, in file order.
TOY_ITEMS = [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0), (3, 3), (3, 0)]
# toy-sub labels are in its own 2-class space: 0 = "b" (toy class 1), 1 = "d" (toy class 3).
TOY_SUB_ITEMS = [(0, 1), (0, 3), (1, 3), (1, 1)]
SUB_MAP = ClassMap(name="toy-sub", source="toy-4", targets=("b", "d"), members=((1,), (3,)))


def red_for(prediction: int) -> int:
    return 60 * prediction + 10


def write_toy_data(root: Path, size: int = 16, n_toy: int | None = None) -> Path:
    """Write both fixtures under ``root`` (``n_toy`` < 8 leaves ``toy`` incomplete)."""
    for i, (label, pred) in enumerate(TOY_ITEMS[:n_toy]):
        d = root / "toy" / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size + 4, size), (red_for(pred), 7 * i, 0)).save(d / f"img{i:02d}.png")
    for i, (label, pred) in enumerate(TOY_SUB_ITEMS):
        d = root / "toy-sub" / "bd"[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size + 4), (red_for(pred), 0, 3 * i)).save(d / f"s{i:02d}.png")
    return root


def toy_config(data: Path, **settings):
    """A quiet, cache-free ``RunConfig`` over the toy data (``toy-sub`` and its ID reference)."""
    from harness.config import RunConfig

    base = dict(shifts=("toy-sub",), data_root=str(data), workers=0, batch_size=3, cache_dir="", progress=False)
    return RunConfig(**{**base, **settings})


def engine_flags(data: Path, run_dir: Path) -> list[str]:
    """Command-line options for a quiet, cache-free, in-process run over the toy data."""
    return ["--data-root", str(data), "--run-dir", str(run_dir), "--workers", "0", "--no-cache", "--no-progress"]


class FolderShift(Shift):
    """Class folders under ``root/<name>``; ``int_labels`` reads the label from the folder name."""

    def __init__(self, spec: ShiftSpec, int_labels: bool, folder: str | None = None) -> None:
        self.spec = spec
        self.int_labels = int_labels
        self.folder = folder or spec.name

    def examples(self, root, transform=None, split=None) -> Iterator[Example]:
        base = Path(root) / self.folder
        if not base.is_dir():
            raise FileNotFoundError(f"{self.spec.name} not found under {base}")
        folders = sorted(p.name for p in base.iterdir() if p.is_dir())
        for label_index, folder in enumerate(folders):
            label = int(folder) if self.int_labels else label_index
            for path in sorted((base / folder).iterdir()):
                with Image.open(path) as img:
                    image = transform(img) if transform else img.convert("RGB")
                yield Example(image, label, f"{folder}/{path.name}", {"colour_g": int(path.stem[-2:])})

    def lazy_examples(self, root, split=None) -> Iterator[LazyExample]:
        """Deferred decoding, counting decodes in ``$TOY_DECODE_LOG`` when set."""
        for ex in self.examples(root, lambda img: None, split):
            path = Path(root) / self.folder / ex.key
            yield LazyExample(ex.key, ex.label, ex.meta, lambda path=path: _decode(path))


class EagerFolderShift(FolderShift):
    """The same reader relying on the default ``Shift.lazy_examples`` (decodes eagerly)."""

    lazy_examples = Shift.lazy_examples


def _decode(path: Path) -> Image.Image:
    log = os.environ.get("TOY_DECODE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{path.name}\n")
    with Image.open(path) as img:
        return img.convert("RGB")


def toy_shift() -> FolderShift:
    spec = ShiftSpec(
        name="toy", version="1", family="toy", label_space="toy-4", num_classes=4, expected_size=len(TOY_ITEMS), metrics=("top1", "top2")
    )
    return FolderShift(spec, int_labels=True)


def toy_sub_shift() -> FolderShift:
    spec = ShiftSpec(
        name="toy-sub",
        version="1",
        family="toy",
        label_space="toy-4",
        num_classes=2,
        expected_size=len(TOY_SUB_ITEMS),
        class_map=SUB_MAP,
        id_reference="toy",
        metrics=("top1",),
        protocol={"projection": "max"},
    )
    return FolderShift(spec, int_labels=False)


SHIFTS = {"toy": toy_shift, "toy-sub": toy_sub_shift}


def get_shift(name: str) -> Shift:
    if name not in SHIFTS:
        raise ValueError(f"Unknown shift {name!r}")
    return SHIFTS[name]()


class ColourNet(torch.nn.Module, Classifier):
    """Predicts the class whose red centre (60 * c + 10) is nearest the image's mean red."""

    def __init__(self, name: str = "colour-net", label_space: str = "toy-4", num_classes: int = 4, bias: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.label_space = label_space
        self.num_classes = num_classes
        self.preprocess_spec = PreprocessSpec(image_size=16, resize_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.bias = bias
        self.calls: list[int] = []

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(images))
        red = images[:, 0].mean(dim=(1, 2)) * 255.0
        centres = torch.arange(self.num_classes, dtype=torch.float32) * 60.0 + 10.0
        return -(red[:, None] - centres).abs() + self.bias

    def describe(self) -> dict:
        return {"name": self.name, "label_space": self.label_space, "bias": self.bias}


class LoggedColourNet(ColourNet):
    """ColourNet that appends each batch size to ``$COLOUR_NET_LOG`` and sleeps
    ``$COLOUR_NET_DELAY`` seconds per batch: for watching a run from another process. On the
    torchrun rank ``$COLOUR_NET_FAIL_RANK`` it fails on its first batch."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if os.environ.get("COLOUR_NET_FAIL_RANK", "-") == os.environ.get("RANK"):
            raise ValueError(f"colour net cannot run on rank {os.environ['RANK']}")
        log = os.environ.get("COLOUR_NET_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{len(images)}\n")
        time.sleep(float(os.environ.get("COLOUR_NET_DELAY", "0")))
        return super().logits(images)


def colour_net_factory(arg: str, **options: str) -> ColourNet:
    return LoggedColourNet(name=f"colour-net:{arg}", bias=float(options.get("bias", 0.0)))


@contextmanager
def registered():
    """Make the toy shifts and ``colour:ARG`` visible to the command line inside the block."""
    from harness import registry

    with registry.shifts.scoped(SHIFTS), registry.models.scoped(MODELS):
        yield


def register() -> None:
    """Register the doubles for the rest of the process (subprocess entry points only)."""
    from harness import registry

    for name, factory in SHIFTS.items():
        registry.shifts.add(name, factory)
    for name, factory in MODELS.items():
        registry.models.add(name, factory)


class LinearNet(torch.nn.Module, Classifier):
    """Logits = W @ mean RGB + b: linear in the weights, so merged weights give merged logits."""

    def __init__(self, weight: list[list[float]], bias: list[float], name: str = "linear") -> None:
        super().__init__()
        self.name, self.label_space, self.num_classes = name, "toy-4", 4
        self.preprocess_spec = PreprocessSpec(image_size=16, resize_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.fc = torch.nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.mean(dim=(2, 3)))


# Weights per name: rows are classes, columns mean R, G, B in [0, 1].
LINEAR_WEIGHTS = {
    "zs": ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], [0.0, 0.0, 0.0, 0.0]),
    "ft": ([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, -1.0]], [0.1, 0.2, 0.3, 0.4]),
}


def linear_net_factory(arg: str, **options: str) -> LinearNet:
    """``linear:zs``, or ``linear:ANY`` with the option ``weights=zs|ft`` (a checkpoint stand-in)."""
    weight, bias = LINEAR_WEIGHTS.get(options.get("weights", arg), LINEAR_WEIGHTS["zs"])
    return LinearNet(weight, bias, name=f"linear:{arg}")


def toy_heldout_shift() -> FolderShift:
    """The toy images again under another name: held-out ID data for greedy soups."""
    spec = ShiftSpec(name="toy-heldout", version="1", family="toy", label_space="toy-4", num_classes=4, expected_size=len(TOY_ITEMS), metrics=("top1",))
    return FolderShift(spec, int_labels=True, folder="toy")


SHIFTS["toy-heldout"] = toy_heldout_shift
MODELS = {"colour": colour_net_factory, "linear": linear_net_factory}


def mean_rgb(root: Path, shift: str) -> tuple[list[str], np.ndarray]:
    """Keys and mean RGB in [0, 1] of each image of a toy shift, read independently of the engine."""
    keys, rgb = [], []
    for ex in get_shift(shift).examples(root):
        keys.append(ex.key)
        rgb.append(np.asarray(ex.image, dtype=np.float64).mean(axis=(0, 1)) / 255.0)
    return keys, np.stack(rgb)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under a run directory but its (empty) lock files (relative path -> bytes), to
    show a failure changed nothing."""
    run_dir = Path(run_dir)
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in sorted(run_dir.rglob("*")) if f.is_file() and f.suffix != ".lock"}  # lock files are empty


def tree_state(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` -> the sha256 of a file's bytes, ``dir`` for a folder, or
    ``absent`` for a root that does not exist. Equal states mean nothing under the roots was
    written, created or removed: lock and temp files, empty folders and cache entries included."""
    import hashlib

    state: dict[str, str] = {}
    for root in map(Path, roots):
        if not root.exists():
            state[str(root)] = "absent"
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def toy_run_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    """``shiftbench run`` of ``colour:a`` on ``toy-sub`` (and its ID reference) in batches of 2."""
    return ["run", "--model", "colour:a", "--shifts", "toy-sub", "--data-root", str(data), "--run-dir", str(run_dir),
            "--batch-size", "2", "--no-progress", *extra]  # fmt: skip
