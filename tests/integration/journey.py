"""The researcher's journey, set up once: fixture data for every ImageNet shift and iWildCam in
their raw layouts, tiny CLIP checkpoints with random weights, and every CLI step's outputs.

Every step goes through ``harness.cli.main`` exactly as a user would type it. The only thing
adapted to the fixtures is each shift's published size (the fixtures hold one image per class,
not 50,000): the real readers, class maps and registry are used, with ``expected_size`` set to
the fixture's size so that ``run`` needs no ``--allow-incomplete`` and ``submit`` accepts the
bundle. A test checks that, with the published sizes, both refuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.cli import main

IMAGENET_SHIFTS = ("imagenet", "imagenetv2", "imagenet-r", "imagenet-a", "imagenet-sketch", "objectnet")
OOD_SHIFTS = IMAGENET_SHIFTS[1:]
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
NAMES_HEAD = "clip:journey-clip@objectnet-names"
CARD = """\
name = "Tiny CLIP zero-shot"
run_model = "clip:journey-clip"
architecture = "journey-clip (ViT, 1 layer, width 32)"
parameters = 1600000
pretraining_data = "none (random weights)"
finetuning_data = "none"
extra_data = false
authors = ["A. Researcher"]
licence = "MIT"

[method]
kind = "zero-shot"
"""


def shift_classes() -> dict[str, type]:
    """The registered reader class of each shift whose published size the fixture replaces."""
    from harness.registry import shifts

    return {name: shifts.get(name) for name in (*IMAGENET_SHIFTS, "objectnet-names", "iwildcam")}


@contextlib.contextmanager
def fixture_sizes(data: Path):
    """Each shift's ``expected_size`` set to what its fixture holds (nothing else changes)."""
    from harness.registry import get_shift

    sizes = {name: sum(1 for _ in get_shift(name).lazy_examples(data)) for name in shift_classes()}
    with pytest.MonkeyPatch.context() as mp:
        for name, cls in shift_classes().items():
            mp.setattr(cls, "spec", dataclasses.replace(cls.spec, expected_size=sizes[name]))
            if cls.spec.family == "wilds":  # its ID split, scored in the same run, too
                ref = cls.spec.id_reference.rpartition(":")[2]
                n = sum(1 for _ in get_shift(name).lazy_examples(data, ref))
                mp.setattr(cls, "expected_sizes", {**cls.expected_sizes, ref: n})
        yield sizes


def cli(*args: str) -> tuple[int, str, str]:
    """``shiftbench ARGS`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def ok(*args: str) -> str:
    status, out, err = cli(*args)
    assert status == 0, f"shiftbench {' '.join(map(str, args))} exited {status}:\n{err}"
    return out


HELD_OUT_CLASSES = 200  # the held-out list keeps the first image of ImageNet classes 0..199


def write_checkpoints(folder: Path, data: Path) -> dict[str, Path]:
    """A tiny open_clip config, its zero-shot CLIP weights (no head), and fine-tuned classifiers
    (``visual.*`` + ``classification_head.*``, safetensors) sharing one image tower.

    The soup ingredients' heads are built so that greedy selection has something to decide:
    ``ft0`` holds the held-out images' own features as class rows for classes 0-99, ``ft1`` for
    100-199 (each alone gets about half the held-out set right, their average nearly all of it),
    ``ft2`` is a large random head."""
    from safetensors.torch import save_file

    from harness.transforms import eval_transform
    from models.clip import create_open_clip, finetuned, register_config

    folder.mkdir(parents=True)
    config = folder / "journey-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    register_config(config)
    torch.manual_seed(0)
    zs = create_open_clip("journey-clip")
    save_file({k: v.contiguous() for k, v in zs.state_dict().items()}, str(folder / "zs.safetensors"))
    torch.manual_seed(1)
    tower = {k: v.contiguous() for k, v in create_open_clip("journey-clip").state_dict().items() if k.startswith("visual.")}
    g = torch.Generator().manual_seed(100)
    random_head = {"classification_head.weight": torch.randn(1000, 16, generator=g),
                   "classification_head.bias": torch.zeros(1000)}  # fmt: skip
    save_file(tower | random_head, str(folder / "probe.safetensors"))
    clf = finetuned("journey-clip", weights=str(folder / "probe.safetensors"))
    keys = (data / "imagenet" / "heldout_keys.txt").read_text().split()[:HELD_OUT_CLASSES]
    (data / "imagenet" / "heldout_keys.txt").write_text("".join(k + "\n" for k in keys))
    transform = eval_transform(clf.preprocess_spec)
    images = torch.stack([transform(Image.open(data / "imagenet" / "train" / k).convert("RGB")) for k in keys])
    with torch.no_grad():
        feats = clf.features(images)
    ingredients = folder / "ingredients"
    ingredients.mkdir()
    for i, rows in enumerate((range(0, 100), range(100, 200))):
        weight = torch.zeros(1000, 16)
        weight[list(rows)] = feats[list(rows)]
        head = {"classification_head.weight": weight, "classification_head.bias": torch.zeros(1000)}
        save_file(tower | head, str(ingredients / f"ft{i}.safetensors"))
    noisy = {"classification_head.weight": 10 * random_head["classification_head.weight"],
             "classification_head.bias": torch.zeros(1000)}  # fmt: skip
    save_file(tower | noisy, str(ingredients / "ft2.safetensors"))
    (folder / "templates.txt").write_text("a photo of a {}.\n")
    return {"config": config, "zs": folder / "zs.safetensors", "ft": ingredients / "ft0.safetensors",
            "ingredients": ingredients, "templates": folder / "templates.txt"}  # fmt: skip


@dataclass
class Journey:
    root: Path
    data: Path
    ckpt: dict[str, Path]
    sizes: dict[str, int]
    run: Path  # clip zero-shot on every ImageNet shift
    wilds: Path  # a 182-way model on iWildCam
    finetuned: Path  # the fine-tuned endpoint alone
    wiseft: Path
    soup: Path
    logs: dict[str, str]
    refused: tuple[int, str, str] = (0, "", "")
    published: dict[str, object] = dataclasses.field(default_factory=dict)  # each shift's real spec

    def common(self) -> list[str]:
        return ["--data-root", str(self.data), "--workers", "0", "--no-progress", "--batch-size", "500",
                "--cache-dir", str(self.root / "image-cache")]  # fmt: skip

    def clip_args(self) -> list[str]:
        return ["--model-arg", f"config={self.ckpt['config']}"]


def build(root: Path) -> Journey:
    from shifts.fixtures import WRITERS

    data = root / "data"
    for name in (*IMAGENET_SHIFTS, "imagenet-heldout", "iwildcam"):
        WRITERS[name](data)
    ckpt = write_checkpoints(root / "ckpt", data)
    j = Journey(root, data, ckpt, {}, root / "runs" / "clip", root / "runs" / "wilds", root / "runs" / "ft",
                root / "runs" / "wiseft", root / "runs" / "soup", {})  # fmt: skip
    return j


def publish(j: Journey) -> None:
    """Report, submit, validate and build the leaderboard site (after ``run_all``)."""
    j.logs["report"] = ok("report", j.run, j.wiseft, "--out", j.root / "report" / "report.pdf",
                          "--json", j.root / "report" / "summary.json", "--bootstrap", "50")  # fmt: skip
    (j.root / "model.toml").write_text(CARD)
    j.logs["submit"] = ok("submit", j.run, "--card", j.root / "model.toml", "--out", j.root / "submissions" / "tiny.tar.gz",
                          "--data-root", j.data)  # fmt: skip
    j.logs["validate"] = ok("validate", j.root / "submissions" / "tiny.tar.gz", "--data-root", j.data)
    j.logs["leaderboard"] = ok("leaderboard", j.root / "submissions", "--out", j.root / "site", "--data-root", j.data)


def run_all(j: Journey) -> None:
    """Every step of docs/workflow.md, in order (the published sizes replaced by the fixture's)."""
    zs = ["--model-arg", f"weights={j.ckpt['zs']}", "--model-arg", f"templates={j.ckpt['templates']}"]
    j.logs["run"] = ok("run", "--model", "clip:journey-clip", *j.clip_args(), *zs, "--shifts", ",".join(OOD_SHIFTS),
                       "--run-dir", j.run, "--json", *j.common())  # fmt: skip
    j.logs["results-before-score"] = (j.run / "results.jsonl").read_text()
    j.logs["score"] = ok("score", j.run)
    j.logs["results-after-score"] = (j.run / "results.jsonl").read_text()
    j.logs["rerun"] = ok("run", "--model", "clip:journey-clip", *j.clip_args(), *zs, "--shifts", ",".join(OOD_SHIFTS),
                         "--run-dir", j.run, "--json", *j.common())  # fmt: skip
    j.logs["results-after-rerun"] = (j.run / "results.jsonl").read_text()
    # open_clip's ObjectNet protocol: a 113-way head from ObjectNet's class names, as another model
    # of the same run directory (it cannot score ImageNet; the report lends it its weights' row).
    j.logs["names"] = ok("run", "--model", "clip:journey-clip", *j.clip_args(), *zs, "--model-arg",
                         f"classnames=objectnet:{j.data / 'objectnet-1.0' / 'mappings'}", "--model-arg", "label_space=objectnet-113",
                         "--model-arg", f"label={NAMES_HEAD}", "--shifts", "objectnet-names", "--run-dir", j.run, *j.common())  # fmt: skip
    j.logs["wilds"] = ok("run", "--model", "fake:wilds", "--model-arg", "num_classes=182", "--model-arg",
                         "label_space=iwildcam-182", "--shifts", "iwildcam", "--run-dir", j.wilds, *j.common())  # fmt: skip
    j.logs["finetuned"] = ok("run", "--model", "finetuned:journey-clip", *j.clip_args(), "--model-arg", f"weights={j.ckpt['ft']}",
                             "--shifts", "imagenet-r", "--run-dir", j.finetuned, *j.common())  # fmt: skip
    j.logs["wiseft"] = ok("wiseft", "--zeroshot", "clip:journey-clip", "--finetuned", "finetuned:journey-clip", *j.clip_args(),
                          "--zeroshot-arg", f"weights={j.ckpt['zs']}", "--zeroshot-arg", f"templates={j.ckpt['templates']}",
                          "--finetuned-arg", f"weights={j.ckpt['ft']}", "--alphas", "0,0.5,1", "--shifts", "imagenet-r",
                          "--run-dir", j.wiseft, *j.common())  # fmt: skip
    j.logs["soup"] = ok("soup", "--model", "finetuned:journey-clip", *j.clip_args(),
                        "--ingredients", j.ckpt["ingredients"], "--recipe", "greedy", "--held-out", "imagenet-heldout",
                        "--shifts", "imagenet-r", "--run-dir", j.soup, *j.common())  # fmt: skip
    for name, run_dir in (("wilds", j.wilds), ("wiseft", j.wiseft), ("soup", j.soup)):
        j.logs[f"{name}-before-score"] = (run_dir / "results.jsonl").read_text()
        ok("score", run_dir)
