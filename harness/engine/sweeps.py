"""WiSE-FT alphas and model soups as engine cells.

Every alpha and every soup is a ``ModelSource``: a cell with its own predictions and result
rows, skipped when done, so sweeps resume like any run. Weights are merged by
``models.merging`` (fp32, identical key sets, heads included) and loaded into one model
instance, which is reused across alphas: one architecture in memory plus the two endpoint
state dicts, never N models.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.api import Classifier
from harness.config import RunConfig
from harness.engine.run import Engine, ModelSource, RunLog
from harness.files import atomic_write_text

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _module(classifier: Classifier, what: str) -> torch.nn.Module:
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError(f"{what}: model {classifier.name!r} is not a torch module, so its weights cannot be merged")
    return classifier


def _load(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{what}: merged weights do not fit the model ({str(exc).splitlines()[0]})") from None


def merged_description(classifier: Classifier, tags: list[str]) -> dict[str, Any]:
    """What a merged model's ``describe()`` must say instead of its base's: its own tags and the
    hash of the weights actually loaded (not the base model's weights file)."""
    from models.checkpoints import state_dict_sha256

    state = _module(classifier, "merged model").state_dict()
    return {"tags": tags, "weights": None, "weights_sha256": state_dict_sha256(state)}


def wiseft_tags(zeroshot_tags: list[str], finetuned_tags: list[str], alpha: float) -> list[str]:
    """alpha 0 is the zero-shot model and 1 the fine-tuned one (their own tags); in between,
    both endpoints' tags but ``zero-shot``/``fine-tuned``, plus ``wise-ft``."""
    if alpha == 0.0:
        return list(zeroshot_tags)
    if alpha == 1.0:
        return list(finetuned_tags)
    both = dict.fromkeys(t for t in (*zeroshot_tags, *finetuned_tags) if t not in ("zero-shot", "fine-tuned"))
    return [*both, "wise-ft"]


def _build(spec: str, options: dict[str, str]) -> Classifier:
    from harness.config import LABEL_OPTION
    from harness.registry import get_model_factory

    name, _, arg = spec.partition(":")
    return get_model_factory(name)(arg, **{k: v for k, v in options.items() if k != LABEL_OPTION})


class WiseFT:
    """Endpoints loaded once; ``classifier(alpha)`` reloads the shared module's weights.

    Each endpoint is ``(NAME:ARG, options)``: the zero-shot and the fine-tuned model are
    usually built from different checkpoints (and often different factories)."""

    def __init__(self, zeroshot: tuple[str, dict[str, str]], finetuned: tuple[str, dict[str, str]]) -> None:
        self.zeroshot, self.finetuned = zeroshot, finetuned
        self._model: Classifier | None = None
        self._states: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self._tags: tuple[list[str], list[str]] = ([], [])

    def _endpoints(self) -> tuple[Classifier, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        if self._model is None or self._states is None:
            zs = _build(*self.zeroshot)
            zs_state = {k: v.detach().clone() for k, v in _module(zs, "--zeroshot").state_dict().items()}
            zs_tags = list(zs.describe().get("tags", []))
            del zs
            ft = _build(*self.finetuned)
            ft_state = {k: v.detach().clone() for k, v in _module(ft, "--finetuned").state_dict().items()}
            self._model, self._states = ft, (zs_state, ft_state)
            self._tags = (zs_tags, list(ft.describe().get("tags", [])))
        return self._model, self._states

    def classifier(self, alpha: float) -> Classifier:
        from models.merging import interpolate

        model, (zs, ft) = self._endpoints()
        labels = (self.zeroshot[0], self.finetuned[0])
        _load(_module(model, "wiseft"), interpolate(zs, ft, alpha, labels=labels), "wiseft")
        return model

    def provenance(self, alpha: float) -> dict[str, Any]:
        return {
            "method": "wiseft",
            "alpha": alpha,
            "zeroshot": self.zeroshot[0],
            "finetuned": self.finetuned[0],
            "zeroshot_options": self.zeroshot[1],
            "finetuned_options": self.finetuned[1],
        }

    def describe(self, alpha: float, classifier: Classifier) -> dict[str, Any]:
        return merged_description(classifier, wiseft_tags(*self._tags, alpha))


def wiseft_name(alpha: float) -> str:
    return f"wiseft(alpha={alpha:g})"


def wiseft_sources(
    zeroshot: tuple[str, dict[str, str]], finetuned: tuple[str, dict[str, str]], alphas: list[float]
) -> list[ModelSource]:
    """One cell per alpha; alpha 0 is the zero-shot model, 1 the fine-tuned one (exactly)."""
    sweep = WiseFT(zeroshot, finetuned)
    sources = []
    for alpha in alphas:
        identity = json.dumps({"wiseft": [list(zeroshot), list(finetuned)], "alpha": alpha}, sort_keys=True)
        sources.append(
            ModelSource(wiseft_name(alpha), identity, lambda a=alpha: sweep.classifier(a), sweep.provenance(alpha), lambda c, a=alpha: sweep.describe(a, c))
        )
    return sources


# -- soups --------------------------------------------------------------------------------


def ingredient_files(paths: list[str]) -> list[Path]:
    """Checkpoint files from files and folders (a folder contributes its checkpoints, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in CHECKPOINT_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: no checkpoints ({', '.join(CHECKPOINT_SUFFIXES)}) in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"ingredient {p} not found")
    if len(set(f.resolve() for f in files)) != len(files):
        raise ValueError("an ingredient is listed twice; each checkpoint may enter a soup once")
    return files


def file_identity(path: Path) -> list[Any]:
    """Path, size and modification time: a rewritten checkpoint makes new cells."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def checkpoint_names(model_keys: list[str], state_keys: list[str], source: str) -> dict[str, str]:
    """For each of the model's parameter names, the checkpoint's name for it: the same name, or
    the one name ending in ``.<name>`` (model soups save ``model.visual.*``, WiSE-FT
    ``image_encoder.model.visual.*``; a text tower or other extra keys are left out)."""
    present = set(state_keys)
    out = {}
    for key in model_keys:
        if key in present:
            out[key] = key
            continue
        hits = [k for k in state_keys if k.endswith("." + key)]
        if len(hits) != 1:
            found = "no parameter" if not hits else f"{len(hits)} parameters ({', '.join(hits[:3])})"
            raise ValueError(
                f"{source}: {found} for the model's {key!r}; soup ingredients must be checkpoints of the --model architecture"
            )
        out[key] = hits[0]
    return out


class Renamed(Mapping[str, torch.Tensor]):
    """A checkpoint seen under the model's parameter names; tensors are read on access."""

    def __init__(self, state: Mapping[str, torch.Tensor], names: dict[str, str]) -> None:
        self.state, self.names = state, names

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.state[self.names[key]]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class Soup:
    """The base model (architecture) with merged weights loaded; built lazily. Ingredients are
    read under the base model's parameter names, whatever prefix their files use."""

    def __init__(self, base: str, options: dict[str, str]) -> None:
        self.base, self.options = base, options
        self._model: Classifier | None = None

    def _base(self) -> Classifier:
        if self._model is None:
            self._model = _build(self.base, self.options)
        return self._model

    def view(self, path: Path) -> Renamed:
        """The ingredient file, lazily, under the base model's names."""
        from models.checkpoints import LazyStateDict

        state = LazyStateDict(path)
        keys = list(_module(self._base(), "soup").state_dict())
        return Renamed(state, checkpoint_names(keys, list(state), str(path)))

    def classifier(self, state: Mapping[str, torch.Tensor]) -> Classifier:
        model = self._base()
        _load(_module(model, "soup"), {k: state[k] for k in state}, "soup")
        return model

    def ingredient(self, path: Path) -> ModelSource:
        identity = json.dumps({"base": self.base, "ingredient": file_identity(path), "options": self.options}, sort_keys=True)
        return ModelSource(
            f"ingredient({path.stem})", identity, lambda: self.classifier(self.view(path)), {"ingredient": str(path)}, self.describe
        )

    def describe(self, classifier: Classifier, soup: bool = False) -> dict[str, Any]:
        """The base's tags (plus ``soup``) and the hash of the weights loaded into it."""
        tags = list(classifier.describe().get("tags", []))
        return merged_description(classifier, [*tags, "soup"] if soup and "soup" not in tags else tags)

    def of(self, name: str, files: list[Path], extra: dict[str, Any]) -> ModelSource:
        from models.merging import average

        identity = json.dumps({"base": self.base, "soup": [file_identity(f) for f in files], "options": self.options}, sort_keys=True)
        return ModelSource(
            name,
            identity,
            lambda: self.classifier(average([self.view(f) for f in files])),
            {"ingredients": [str(f) for f in files], **extra},
            lambda c: self.describe(c, soup=True),
        )


def held_out_score(engine: Engine, source: ModelSource, held_out: str) -> float:
    """Runs (or reuses) ``source`` on the held-out shift and returns its main metric."""
    engine.run([source])
    metric = engine.spec(held_out).main_metric
    _, cell = engine.cell_identity(source, held_out)
    for row in engine.run_dir.read_results():
        if row.model == source.name and row.setting == held_out and row.provenance.get("config_hash") == cell:
            return float(row.metrics[metric])
    raise ValueError(f"no {held_out} result for {source.name} after running it")


# Factories that need weights= to build a model; a soup's base borrows its first ingredient's.
WEIGHTED_FACTORIES = frozenset({"clip", "finetuned", "timm", "torchvision"})


def soup_sources(ingredients: list[str], recipe: str, held_out: str | None, config: RunConfig) -> list[ModelSource]:
    """The soup to report: uniform over all ingredients, or greedy on ``held_out``.

    Greedy selection runs every ingredient and every candidate as a cell on the held-out
    shift (resumable, cached images), and writes its decisions to ``soups/greedy.json``."""
    if len(config.models) != 1:
        raise ValueError("a soup needs exactly one --model NAME:ARG giving the architecture the ingredients load into")
    files = ingredient_files(ingredients)
    base, options = config.model_specs()[0]
    if base.partition(":")[0] in WEIGHTED_FACTORIES and "weights" not in options:
        options = {**options, "weights": str(files[0])}  # any ingredient builds the architecture
    soup = Soup(base, options)
    if recipe == "uniform":
        return [soup.of("soup(uniform)", files, {"recipe": "uniform"})]
    if not held_out:
        raise ValueError("--recipe greedy needs --held-out SHIFT (held-out ID data, e.g. imagenet-heldout)")
    from harness.engine.run import plan_tasks, run_specs

    reported = {t.shift for t in plan_tasks(config.shifts, run_specs(config))}
    if held_out in reported:
        raise ValueError(
            f"--held-out {held_out} is also reported (directly or as an ID reference of {', '.join(config.shifts)}); "
            "greedy soups select on held-out data only, e.g. imagenet-heldout"
        )
    from models.merging import greedy_soup

    select_config = dataclasses.replace(config, shifts=(held_out,))
    engine = Engine(select_config, log=RunLog(config.json))
    by_name = {f.stem: f for f in files}
    if len(by_name) != len(files):
        raise ValueError("ingredient files must have distinct names (they name the cells)")
    scores = {name: held_out_score(engine, soup.ingredient(f), held_out) for name, f in by_name.items()}

    order = sorted(by_name, key=lambda n: -scores[n])  # greedy_soup's order (stable on ties)
    tried, kept, best = [order[0]], [order[0]], [scores[order[0]]]

    def evaluate_next(state: dict[str, torch.Tensor]) -> float:
        """greedy_soup tries ``kept + [next]`` in order; name the candidate cell after it."""
        name = order[len(tried)]
        tried.append(name)
        names = [*kept, name]
        identity = json.dumps({"base": soup.base, "soup": [file_identity(by_name[n]) for n in names], "options": soup.options}, sort_keys=True)
        source = ModelSource(f"candidate({'+'.join(names)})", identity, lambda: soup.classifier(state), {"candidate": names}, lambda c: soup.describe(c, soup=True))
        score = held_out_score(engine, source, held_out)
        if score > best[0]:
            kept.append(name)
            best[0] = score
        return score

    _, record = greedy_soup({n: soup.view(by_name[n]) for n in order}, scores, evaluate_next, held_out)
    if record.accepted != kept:
        raise AssertionError(f"greedy soup bookkeeping diverged: {record.accepted} vs {kept}")
    path = Path(config.run_dir) / "soups" / "greedy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record.to_dict(), indent=2) + "\n")
    chosen = [by_name[n] for n in record.accepted]
    return [soup.of("soup(greedy)", chosen, {"recipe": "greedy", "held_out": held_out, "record": str(path)})]
