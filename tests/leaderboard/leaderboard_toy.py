"""Toy shifts and run directories for leaderboard tests, in the real run-directory format.

Four shifts mirror the suite's shapes: an ID set (``toy``, 10 classes), a same-classes shift
(``toy-v2``), a 4-class singleton subset (``toy-r``, like ImageNet-R) and a 3-class max-over-members
map (``toy-o``, like ObjectNet). Claimed metrics are computed here by a plain loop, independently
of the validator's vectorised code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.api import ClassMap, Example, Predictions, Result, Shift, ShiftSpec, id_view_setting

R_MAP = ClassMap("toy-r", "toy-10", ("b", "d", "e", "i"), ((1,), (3,), (4,), (8,)))
O_MAP = ClassMap("toy-o", "toy-10", ("ac", "f", "hj"), ((0, 2), (5,), (7, 9)))
O_PROTOCOL = {"crop": "border-2px", "head": "toy-10", "projection": "max"}

SPECS = {
    "toy": ShiftSpec("toy", "1.0", "toy", "toy-10", 10, 40),
    "toy-v2": ShiftSpec("toy-v2", "1.0", "toy", "toy-10", 10, 20, id_reference="toy"),
    "toy-r": ShiftSpec(
        "toy-r",
        "1.0",
        "toy",
        "toy-10",
        4,
        12,
        class_map=R_MAP,
        id_reference="toy",
        metrics=("top1",),
    ),
    "toy-o": ShiftSpec(
        "toy-o",
        "1.0",
        "toy",
        "toy-10",
        3,
        9,
        class_map=O_MAP,
        id_reference="toy",
        protocol=O_PROTOCOL,
        metrics=("top1",),
    ),
}
SUITE = ("toy", "toy-v2", "toy-r", "toy-o")


def get_shift(name: str) -> ToyShift:
    if name not in SPECS:
        raise ValueError(f"Unknown shift {name!r}.")
    return ToyShift(name)


def keys_and_labels(shift: str) -> tuple[list[str], list[int]]:
    spec = SPECS[shift]
    labels = [i % spec.num_classes for i in range(spec.expected_size)]
    return [f"{y}/img_{i:04d}.png" for i, y in enumerate(labels)], labels


class ToyShift(Shift):
    """Reads ``root/<shift>/<label>/<file>``; the key is the path below ``root/<shift>``."""

    def __init__(self, name: str) -> None:
        self.spec = SPECS[name]

    def examples(self, root, transform=None, split=None):
        base = Path(root) / self.spec.name
        for path in sorted(base.rglob("*.png")):
            key = path.relative_to(base).as_posix()
            yield Example(path, int(key.split("/")[0]), key, {})


def write_dataset(root: Path) -> None:
    for shift in SUITE:
        for key in keys_and_labels(shift)[0]:
            path = root / shift / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG\r\n\x1a\n")


def _logits(source_labels: list[int], skill: float, rng: np.random.Generator) -> np.ndarray:
    out = rng.normal(size=(len(source_labels), 10)).astype(np.float32)
    for i, y in enumerate(source_labels):
        if rng.random() < skill:
            out[i, y] = 8.0
    return out.astype(np.float16)


def _source_label(shift: str, label: int) -> int:
    cmap = SPECS[shift].class_map
    return label if cmap is None else cmap.members[label][-1]


def reference_top1(logits: np.ndarray, labels: list[int], members) -> float:
    """Top-1 by a plain loop: score of target k is the max over its member columns."""
    hits = 0
    for row, y in zip(logits.astype(np.float32).tolist(), labels, strict=True):
        scores = [max(row[j] for j in m) for m in members]
        hits += scores.index(max(scores)) == y
    return hits / len(labels)


def make_predictions(model: str, skill: float, seed: int) -> dict[str, Predictions]:
    rng = np.random.default_rng(seed)
    out = {}
    for shift in SUITE:
        keys, labels = keys_and_labels(shift)
        logits = _logits([_source_label(shift, y) for y in labels], skill, rng)
        out[shift] = Predictions(
            model, shift, np.array(keys), np.array(labels, dtype=np.int64), logits
        )
    return out


def result_rows(model: str, preds: dict[str, Predictions], protocols=None) -> list[Result]:
    rows = []
    identity = tuple((j,) for j in range(10))
    for shift in SUITE:
        spec, p = SPECS[shift], preds[shift]
        members = spec.class_map.members if spec.class_map else identity
        top1 = reference_top1(p.logits, p.labels.tolist(), members)
        rows.append(_row(model, shift, shift, p, top1, len(p), spec.class_map, protocols))
        if spec.class_map is not None:
            ref = preds["toy"]
            s2t = spec.class_map.source_to_target()
            keep = [i for i, y in enumerate(ref.labels.tolist()) if y in s2t]
            top1 = reference_top1(
                ref.logits[keep], [s2t[ref.labels[i]] for i in keep], spec.class_map.members
            )
            rows.append(
                _row(
                    model,
                    id_view_setting("toy", shift),
                    "toy",
                    ref,
                    top1,
                    len(keep),
                    spec.class_map,
                    protocols,
                )
            )
    return rows


def _row(model, setting, shift, p, top1, n, cmap, protocols=None) -> Result:
    spec = SPECS[shift]
    scored = setting.split("@")[-1]
    return Result(
        model=model,
        setting=setting,
        shift=shift,
        shift_version=spec.version,
        n=n,
        n_expected=spec.expected_size if "@" not in setting else n,
        metrics={"top1": top1},
        class_map=cmap.digest() if cmap is not None else None,
        # an ID view is scored under the OOD shift's protocol, as the engine records it
        protocol=dict((protocols or {}).get(scored, SPECS[scored].protocol)),
        predictions_sha256=p.sha256(),
        provenance={"harness_version": "0.1.0", "seed": 0},
    )


def safe(model: str) -> str:
    from harness.engine.store import safe_name

    return safe_name(model)


def write_run(run_dir: Path, models: dict[str, tuple[float, int]], protocols=None) -> Path:
    """A run directory with one (skill, seed) entry per model name; ``protocols`` overrides
    the protocol tags recorded for some shifts."""
    run_dir = Path(run_dir)
    lines = []
    for model, (skill, seed) in models.items():
        preds = make_predictions(model, skill, seed)
        for shift, p in preds.items():
            p.save(run_dir / "predictions" / safe(model) / f"{shift}.npz")
        lines += [r.to_json() for r in result_rows(model, preds, protocols)]
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "config.json").write_text(json.dumps({"models": list(models)}))
    return run_dir


CARD_TOML = """\
name = {name}
architecture = "ToyNet-10"
parameters = 1234
pretraining_data = "none"
finetuning_data = "toy train"
extra_data = false
authors = ["A. Researcher", "B. Researcher"]
paper = "https://example.org/paper"
licence = "MIT"

[method]
kind = "wise-ft"
alpha = 0.5
"""


def write_card(path: Path, name: str = "Toy WiSE-FT", **extra) -> Path:
    """A valid card; ``extra`` adds top-level keys (e.g. run_model)."""
    extra_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    path.write_text(
        CARD_TOML.format(name=json.dumps(name)).replace("[method]", extra_lines + "[method]")
    )
    return path


class LateMapShift(ToyShift):
    """Like ObjectNet: the class map ships with the data, so the spec lacks it until the data
    has been read."""

    def __init__(self, name: str) -> None:
        import dataclasses

        super().__init__(name)
        self.spec = dataclasses.replace(SPECS[name], class_map=None)

    def examples(self, root, transform=None, split=None):
        self.spec = SPECS[self.spec.name]
        yield from super().examples(root, transform, split)

    def spec_for(self, root: Path) -> ShiftSpec:
        return SPECS[self.spec.name]


def get_shift_late_map(name: str) -> ToyShift:
    return LateMapShift(name) if name == "toy-o" else get_shift(name)
