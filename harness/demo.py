"""``shiftbench demo``: the documented workflow on miniature data, in about a minute on a laptop.

It writes small datasets in the real on-disk layouts (one image per class, from
``shifts.fixtures``) and a tiny CLIP-shaped zero-shot/fine-tuned checkpoint pair with random
weights, then runs check-data, run, wiseft, soup, report, submit, validate and leaderboard through
the command line exactly as a user types them, printing each command first. The data is not the
published test sets, so each step that scores says ``--allow-incomplete`` and the bundle is marked
incomplete: a trial of the workflow, never a leaderboard entry.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEMO_SHIFTS = ("imagenetv2", "imagenet-r")
SUITE = "imagenet,imagenetv2,imagenet-r"
ARCH = "demo-clip"
TINY_CLIP = {
    "quick_gelu": False,  # random weights built with GELU: stated, as a config for real weights must
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
HELD_OUT_CLASSES = 100
CARD = f"""\
name = "Demo CLIP (random weights)"
run_model = "clip:{ARCH}"
architecture = "{ARCH} (ViT, 1 layer, width 32)"
parameters = 1600000
pretraining_data = "none (random weights)"
finetuning_data = "none"
extra_data = false
authors = ["shiftbench demo"]
licence = "MIT"

[method]
kind = "zero-shot"
"""


def write_data(data: Path) -> None:
    """ImageNet val and train (held-out slice), ImageNetV2 and ImageNet-R in their raw layouts."""
    from shifts.fixtures import WRITERS

    for name in ("imagenet", "imagenet-heldout", *DEMO_SHIFTS):
        WRITERS[name](data)
    keys_file = data / "imagenet" / "heldout_keys.txt"
    keys = keys_file.read_text().split()[:HELD_OUT_CLASSES]
    keys_file.write_text("".join(k + "\n" for k in keys))


def write_checkpoints(ckpt: Path, data: Path) -> dict[str, Path]:
    """The tiny architecture's config, zero-shot CLIP weights, and three fine-tuned classifiers
    (image tower + 1000-way head, safetensors) sharing one tower: ``ft0``/``ft1`` put held-out
    image features as the rows of classes 0-49 / 50-99, ``ft2`` is a loud random head, so the
    greedy soup has a real choice to make."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from harness.transforms import eval_transform
    from models.clip import create_open_clip, finetuned, register_config

    ckpt.mkdir(parents=True, exist_ok=True)
    config = ckpt / f"{ARCH}.json"
    config.write_text(json.dumps(TINY_CLIP))
    register_config(config)
    torch.manual_seed(0)
    zs = create_open_clip(ARCH)
    save_file({k: v.contiguous() for k, v in zs.state_dict().items()}, str(ckpt / "zeroshot.safetensors"))
    torch.manual_seed(1)
    tower = {k: v.contiguous() for k, v in create_open_clip(ARCH).state_dict().items() if k.startswith("visual.")}
    g = torch.Generator().manual_seed(100)
    random_head = torch.randn(1000, TINY_CLIP["embed_dim"], generator=g)
    probe = ckpt / "probe.safetensors"
    save_file(tower | {"classification_head.weight": random_head, "classification_head.bias": torch.zeros(1000)}, str(probe))
    clf = finetuned(ARCH, weights=str(probe))
    keys = (data / "imagenet" / "heldout_keys.txt").read_text().split()
    transform = eval_transform(clf.preprocess_spec)
    images = torch.stack([transform(Image.open(data / "imagenet" / "train" / k).convert("RGB")) for k in keys])
    with torch.no_grad():
        feats = clf.features(images)
    probe.unlink()
    ingredients = ckpt / "ingredients"
    ingredients.mkdir(exist_ok=True)
    half = HELD_OUT_CLASSES // 2
    for i, rows in enumerate((range(0, half), range(half, HELD_OUT_CLASSES))):
        weight = torch.zeros(1000, TINY_CLIP["embed_dim"])
        weight[list(rows)] = feats[list(rows)]
        save_file(tower | {"classification_head.weight": weight, "classification_head.bias": torch.zeros(1000)},
                  str(ingredients / f"ft{i}.safetensors"))
    save_file(tower | {"classification_head.weight": 10 * random_head, "classification_head.bias": torch.zeros(1000)},
              str(ingredients / "ft2.safetensors"))
    (ckpt / "templates.txt").write_text("a photo of a {}.\n")
    return {"config": config, "zeroshot": ckpt / "zeroshot.safetensors", "finetuned": ingredients / "ft0.safetensors",
            "ingredients": ingredients, "templates": ckpt / "templates.txt"}


def steps(root: Path, ckpt: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """The workflow as (what it shows, shiftbench arguments), with paths relative to ``root``."""

    def rel(p: Path) -> str:
        return str(Path(p).relative_to(root))

    data = "data"
    engine = ["--data-root", data, "--allow-incomplete", "--workers", "0", "--batch-size", "250",
              "--cache-dir", "cache"]
    config = ["--model-arg", f"config={rel(ckpt['config'])}"]
    zs_args = [f"config={rel(ckpt['config'])}", f"weights={rel(ckpt['zeroshot'])}", f"templates={rel(ckpt['templates'])}"]
    ft_args = [f"config={rel(ckpt['config'])}", f"weights={rel(ckpt['finetuned'])}"]
    require = ["--require", SUITE]
    return [
        ("what data is there (miniatures: one image per class, so INCOMPLETE against the published sizes)",
         ["check-data", "--data-root", data, "imagenet", *DEMO_SHIFTS]),
        ("zero-shot CLIP on ImageNetV2 and ImageNet-R (ImageNet val is added as their ID reference)",
         ["run", "--model", f"clip:{ARCH}", *config, "--model-arg", zs_args[1], "--model-arg", zs_args[2],
          "--shifts", ",".join(DEMO_SHIFTS), "--run-dir", "runs/clip", *engine]),
        ("WiSE-FT between the zero-shot and the fine-tuned weights",
         ["wiseft", "--zeroshot", f"clip:{ARCH}", "--finetuned", f"finetuned:{ARCH}",
          *sum((["--zeroshot-arg", a] for a in zs_args), []), *sum((["--finetuned-arg", a] for a in ft_args), []),
          "--alphas", "0,0.5,1", "--shifts", "imagenet-r", "--run-dir", "runs/wiseft", *engine]),
        ("a greedy soup of three fine-tuned ingredients, chosen on the held-out slice of ImageNet train",
         ["soup", "--model", f"finetuned:{ARCH}", *config, "--ingredients", rel(ckpt["ingredients"]),
          "--recipe", "greedy", "--held-out", "imagenet-heldout", "--shifts", "imagenet-r",
          "--run-dir", "runs/soup", *engine]),
        ("effective robustness against the bundled testbed's trend",
         ["report", "runs/clip", "runs/wiseft", "runs/soup", "--allow-incomplete", "--bootstrap", "50",
          "--out", "report/report.pdf", "--json", "report/summary.json"]),
        ("a submission bundle (marked incomplete: a trial, never a leaderboard entry)",
         ["submit", "runs/clip", "--card", "model.toml", "--out", "submissions/demo.tar.gz", "--data-root", data,
          *require, "--allow-incomplete"]),
        ("the bundle checked without trusting it",
         ["validate", "submissions/demo.tar.gz", "--data-root", data, *require, "--allow-incomplete"]),
        ("the ranked site",
         ["leaderboard", "submissions", "--out", "site", "--data-root", data, *require, "--allow-incomplete"]),
    ]


def run_demo(root: Path, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the demo's data and checkpoints under ``root`` and run every step there."""
    import os

    from harness.cli import main
    from harness.files import check_output

    root = Path(root).resolve()
    check_output(root, "DIR", folder=True)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; the demo writes a fresh folder (pass another DIR)")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"# writing miniature datasets and a tiny CLIP checkpoint pair under {root}")
    write_data(root / "data")
    ckpt = write_checkpoints(root / "ckpt", root / "data")
    (root / "model.toml").write_text(CARD)
    say(f"# cd {shlex.quote(str(root))}")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for what, argv in steps(root, ckpt):
            say(f"\n# {what}")
            say("$ shiftbench " + shlex.join(argv))
            sys.stdout.flush()
            status = main(argv)
            if status != 0 and argv[0] != "check-data":
                raise RuntimeError(f"`shiftbench {' '.join(argv)}` exited {status}")
    finally:
        os.chdir(cwd)
    out = {"report": root / "report" / "report.pdf", "summary": root / "report" / "summary.json",
           "site": root / "site" / "index.html", "bundle": root / "submissions" / "demo.tar.gz"}
    say(f"\n# done in {time.monotonic() - t0:.0f} s: report {out['report']}, site {out['site']}")
    return out
