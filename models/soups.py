"""``--model soup:ARCH``: a model soup of fine-tuned CLIP classifiers (Wortsman et al. 2022).

``ingredients=`` is a folder (every ``*.safetensors``, ``*.pt``, ``*.pth``, ``*.bin`` in it,
sorted by name) or a comma-separated list of files. The soup is their uniform average; with
``selection=greedy.json`` (a record written by ``models.merging.greedy_soup``) only the
accepted ingredients go in. Averaging streams tensor by tensor, so memory stays about one model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from models.checkpoints import LazyStateDict, file_sha256, state_dict_sha256
from models.classifiers import ImageHeadClassifier
from models.clip import (
    CLIP_PREFIXES,
    HEAD_KEYS,
    activation_info,
    build_image_classifier,
    check_same_activation,
    label_space_for,
    preprocess_spec_from_open_clip,
    resolve_activation,
    resolve_arch,
)
from models.merging import GreedySoupRecord, average
from models.options import Options

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
SOUP_OPTIONS = ("ingredients", "selection", "pretrained", "config", "activation", "label_space", "name")


def list_ingredients(specs: str | Sequence[str]) -> list[Path]:
    """Checkpoint files from files, folders (their checkpoints, sorted by name) and
    comma-separated lists, in the order given; each file may enter a soup once."""
    files: list[Path] = []
    for spec in [specs] if isinstance(specs, str) else specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)}) in ingredient folder {path}")
            files.extend(found)
            continue
        listed = [Path(p.strip()).expanduser() for p in str(spec).split(",") if p.strip()]
        missing = [str(p) for p in listed if not p.is_file()]
        if missing or not listed:
            raise FileNotFoundError(f"soup ingredients not found: {', '.join(missing) or spec!r}")
        files.extend(listed)
    if len({f.resolve() for f in files}) != len(files):
        raise ValueError("an ingredient is listed twice; each checkpoint may enter a soup once")
    return files


def soup_id(shas: Sequence[str]) -> str:
    """A short id of a set of ingredients: the hash of their sorted content hashes."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()[:8]


def ingredient_entry(path: Path, sha256: str | None = None) -> dict[str, str]:
    """How records name an ingredient: its file name and the sha256 of its content."""
    return {"file": path.name, "path": str(path), "sha256": sha256 or file_sha256(path)}


def select_accepted(files: list[Path], record_path: Path) -> tuple[list[Path], GreedySoupRecord]:
    """The ingredients a greedy-soup record accepted, in its order.

    The one matching rule: an ingredient the record names with a sha256 is the file with that
    content, wherever it lies and whatever it is called now; one named only by file (older
    records) is the file of that name or stem. Anything else is an error naming the entry."""
    record = GreedySoupRecord.load(record_path)
    shas: dict[str, Path] = {}
    chosen = []
    for name in record.accepted:
        entry = record.ingredients.get(name, {})
        if entry.get("sha256"):
            if not shas:
                shas = {file_sha256(p): p for p in files}
            hit = shas.get(entry["sha256"])
            what = f"{entry.get('file', name)} (sha256 {entry['sha256'][:12]})"
        else:
            hits = [p for p in files if name in (p.name, p.stem, str(p))]
            hit = hits[0] if len(hits) == 1 else None
            what = repr(name)
        if hit is None:
            raise ValueError(f"{record_path}: accepted ingredient {what} is not among the ingredients given")
        chosen.append(hit)
    return chosen, record


def refuse_activation_mix(files: Sequence[Path], shas: Sequence[str]) -> None:
    """Checkpoints whose own files say different activations (an OpenAI archive, a known
    release) are of different architectures: merging them is refused."""
    from models.clip import activation_evidence

    said: dict[str, str] = {}
    for path, sha in zip(files, shas, strict=True):
        for value, how in activation_evidence("", None, path, sha, include_arch=False):
            said.setdefault(value, f"{path.name} ({how})")
    if len(said) > 1:
        raise ValueError("weights trained with different activations cannot be merged: "
                         + "; ".join(f"{how} is {value}" for value, how in sorted(said.items())))


def checkpoint_names(model_keys: Sequence[str], state_keys: Sequence[str], source: str) -> dict[str, str]:
    """For each of the model's parameter names, the checkpoint's name for it: the same name,
    else the one name that ends in ``.<name>`` (model soups save ``model.visual.*``, WiSE-FT
    ``image_encoder.model.visual.*``), else the one name ``<name>`` ends in. Extra keys (a text
    tower) are left out. The one rule by which soups, sweeps and ``merge`` match ingredients."""
    present = set(state_keys)
    out = {}
    for key in model_keys:
        if key in present:
            out[key] = key
            continue
        hits = [k for k in state_keys if k.endswith("." + key)] or [k for k in state_keys if key.endswith("." + k)]
        if len(hits) != 1:
            found = "no parameter" if not hits else f"{len(hits)} parameters ({', '.join(hits[:3])})"
            raise ValueError(f"{source}: {found} for {key!r}; ingredients must be checkpoints of the same architecture")
        out[key] = hits[0]
    return out


class Renamed(Mapping[str, torch.Tensor]):
    """A checkpoint seen under other parameter names; tensors are read on access."""

    def __init__(self, state: Mapping[str, torch.Tensor], names: dict[str, str]) -> None:
        self.state, self.names = state, names

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.state[self.names[key]]

    def shape(self, key: str) -> tuple[int, ...]:
        inner = self.state
        name = self.names[key]
        return inner.shape(name) if isinstance(inner, LazyStateDict) else tuple(inner[name].shape)

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def view(path: Path, keys: Sequence[str]) -> Renamed:
    """The checkpoint at ``path``, read lazily, under the names ``keys``."""
    state = LazyStateDict(path)
    return Renamed(state, checkpoint_names(list(keys), list(state), str(path)))


def aligned_views(files: Sequence[Path]) -> list[Renamed]:
    """Every checkpoint, lazily, under the first one's parameter names (``checkpoint_names``)."""
    keys = list(LazyStateDict(files[0]))
    return [view(f, keys) for f in files]


def classifier_keys(state: LazyStateDict) -> list[str]:
    """The canonical names an image classifier needs (``visual.*`` and the head), as found in
    a soup ingredient under any of the CLIP prefixes."""
    for prefix in CLIP_PREFIXES:
        keys = [k[len(prefix):] for k in state if k.startswith(prefix + "visual.")]
        if keys:
            missing = [k for k in HEAD_KEYS if k not in state]
            if missing:
                raise ValueError(f"{state.path}: no {missing[0]}; soup ingredients are fine-tuned classifiers with heads")
            return keys + list(HEAD_KEYS)
    raise ValueError(f"{state.path}: no CLIP image tower found (expected visual.*, model.visual.* or image_encoder.model.visual.*)")


def soup(arg: str, **options: str) -> ImageHeadClassifier:
    """``--model soup:ARCH``: the uniform (or greedy-selected) average of fine-tuned classifiers."""
    opts = Options("soup", options, SOUP_OPTIONS)
    arch = resolve_arch(arg, opts)
    files = list_ingredients(opts.require("ingredients", "a folder of checkpoints or a comma-separated list"))
    selection = opts.path("selection", "greedy soup record JSON", required=False)
    tag = opts.get("pretrained")
    activation_opt = opts.get("activation")
    name = opts.get("name")
    label_space_opt = opts.get("label_space")
    opts.done()
    record = None
    if selection is not None:
        files, record = select_accepted(files, selection)
    shas = [file_sha256(p) for p in files]
    activation = resolve_activation(arch, tag, files[0], shas[0], activation_opt, f"{files[0]} (the first soup ingredient)")
    for path, sha in zip(files[1:], shas[1:], strict=True):
        check_same_activation(activation, path, sha, arch)
    keys = classifier_keys(LazyStateDict(files[0]))
    canonical = average([view(p, keys) for p in files], progress=len(files) > 2, desc="soup")
    visual, w, b = build_image_classifier(arch, canonical, tag, f"soup of {len(files)} ingredients", activation[0])
    label_space = label_space_opt or label_space_for(opts, int(w.shape[0]))
    info = {"arch": arch, "tags": ["clip", "fine-tuned", "soup"], "alpha": None,
            "weights_sha256": state_dict_sha256(canonical),  # of the averaged tower + head
            "recipe": "greedy" if record else "uniform",
            "ingredients": [ingredient_entry(p, sha) for p, sha in zip(files, shas, strict=True)],
            "head": {"recipe": "averaged linear heads of the ingredients"}, "pretrained_tag": tag,
            **activation_info(activation)}
    if record is not None:
        info["greedy"] = {"heldout": record.heldout, "order": record.order, "accepted": record.accepted,
                          "final_score": record.final_score}
    name = name or f"soup:{arch}[{soup_id(shas)}]({info['recipe']},n={len(files)})"
    return ImageHeadClassifier(name, visual, w, b, preprocess_spec_from_open_clip(visual.preprocess_cfg),
                               label_space, info)
