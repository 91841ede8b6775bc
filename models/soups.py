"""``--model soup:ARCH``: a model soup of fine-tuned CLIP classifiers (Wortsman et al. 2022).

``ingredients=`` is a folder (every ``*.safetensors``, ``*.pt``, ``*.pth``, ``*.bin`` in it,
sorted by name) or a comma-separated list of files. The soup is their uniform average; with
``selection=greedy.json`` (a record written by ``models.merging.greedy_soup``) only the
accepted ingredients go in. Averaging streams tensor by tensor, so memory stays about one model.
"""

from __future__ import annotations

from pathlib import Path

from models.checkpoints import LazyStateDict, file_sha256, state_dict_sha256
from models.classifiers import ImageHeadClassifier
from models.clip import (
    CLIP_PREFIXES,
    HEAD_KEYS,
    build_image_classifier,
    label_space_for,
    preprocess_spec_from_open_clip,
    resolve_arch,
)
from models.merging import GreedySoupRecord, average
from models.options import Options

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
SOUP_OPTIONS = ("ingredients", "selection", "pretrained", "config", "label_space", "name")


def list_ingredients(spec: str) -> list[Path]:
    """A folder of checkpoints or a comma-separated list of files, in a stable order."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if not found:
            raise FileNotFoundError(f"no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)}) in ingredient folder {path}")
        return found
    files = [Path(p.strip()).expanduser() for p in spec.split(",") if p.strip()]
    missing = [str(p) for p in files if not p.is_file()]
    if missing or not files:
        raise FileNotFoundError(f"soup ingredients not found: {', '.join(missing) or spec!r}")
    return files


def select_accepted(files: list[Path], record_path: Path) -> tuple[list[Path], GreedySoupRecord]:
    """The ingredients a greedy-soup record accepted, matched by path or file name."""
    record = GreedySoupRecord.load(record_path)
    by_name = {p.name: p for p in files}
    by_path = {str(p): p for p in files}
    chosen = []
    for name in record.accepted:
        hit = by_path.get(name) or by_name.get(Path(name).name)
        if hit is None:
            raise ValueError(f"{record_path}: accepted ingredient {name!r} is not among the ingredients given")
        chosen.append(hit)
    return chosen, record


def classifier_keys(state: LazyStateDict) -> tuple[str, list[str]]:
    """The prefix of the CLIP weights and the keys an image classifier needs (tower + head)."""
    for prefix in CLIP_PREFIXES:
        keys = [k for k in state if k.startswith(prefix + "visual.")]
        if keys:
            missing = [k for k in HEAD_KEYS if k not in state]
            if missing:
                raise ValueError(f"{state.path}: no {missing[0]}; soup ingredients are fine-tuned classifiers with heads")
            return prefix, keys + list(HEAD_KEYS)
    raise ValueError(f"{state.path}: no CLIP image tower found (expected visual.*, model.visual.* or image_encoder.model.visual.*)")


def soup(arg: str, **options: str) -> ImageHeadClassifier:
    opts = Options("soup", options, SOUP_OPTIONS)
    arch = resolve_arch(arg, opts)
    files = list_ingredients(opts.require("ingredients", "a folder of checkpoints or a comma-separated list"))
    selection = opts.path("selection", "greedy soup record JSON", required=False)
    tag = opts.get("pretrained")
    name = opts.get("name", f"soup:{arch}")
    label_space_opt = opts.get("label_space")
    opts.done()
    record = None
    if selection is not None:
        files, record = select_accepted(files, selection)
    states = [LazyStateDict(p) for p in files]
    prefix, keys = classifier_keys(states[0])
    merged = average(states, keys=keys, progress=len(files) > 2, desc="soup")
    canonical = {(k[len(prefix):] if k not in HEAD_KEYS else k): v for k, v in merged.items()}
    visual, w, b = build_image_classifier(arch, canonical, tag, f"soup of {len(files)} ingredients")
    label_space = label_space_opt or label_space_for(opts, int(w.shape[0]))
    info = {"arch": arch, "tags": ["clip", "fine-tuned", "soup"], "alpha": None,
            "weights_sha256": state_dict_sha256(canonical),  # of the averaged tower + head
            "recipe": "greedy" if record else "uniform",
            "ingredients": [{"path": str(p), "sha256": file_sha256(p)} for p in files],
            "head": {"recipe": "averaged linear heads of the ingredients"}, "pretrained_tag": tag}
    if record is not None:
        info["greedy"] = {"heldout": record.heldout, "order": record.order, "accepted": record.accepted,
                          "final_score": record.final_score}
    return ImageHeadClassifier(name, visual, w, b, preprocess_spec_from_open_clip(visual.preprocess_cfg),
                               label_space, info)

