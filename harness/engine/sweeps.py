"""WiSE-FT alphas and model soups as engine cells.

Every alpha and every soup is a ``ModelSource``: a cell with its own predictions and result
rows, skipped when done, so sweeps resume like any run. The weights come from the methods'
one home in ``models/`` (``models.wiseft.wiseft_weights``; ``models.soups`` for ingredients,
their matching and greedy records; ``models.merging`` for the averages) and are loaded into
one model instance, reused across alphas: one architecture in memory plus the two endpoint
state dicts (kept on the CPU, whatever device the model runs on), never N models.

Default names carry the architecture and short weights hashes
(``wiseft:ViT-B-32[zs 1a2b3c4d,ft 5e6f7a8b](alpha=0.5)``), so two sweeps of different
checkpoints in one run directory or report never share a name.
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

CLIP_FACTORIES = frozenset({"clip", "finetuned"})  # factories that take activation=


def _module(classifier: Classifier, what: str) -> torch.nn.Module:
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError(f"{what}: model {classifier.name!r} is not a torch module, so its weights cannot be merged")
    return classifier


def _load(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{what}: merged weights do not fit the model ({str(exc).splitlines()[0]})") from None


def merged_description(classifier: Classifier, tags: list[str], sha256: str | None = None) -> dict[str, Any]:
    """What a merged model's ``describe()`` must say instead of its base's: its own tags and the
    hash of the weights actually loaded (not the base model's weights file). ``sha256``: that
    hash when the caller already has it (computed once per merge, not once per cell)."""
    from models.checkpoints import state_dict_sha256

    if sha256 is None:
        sha256 = state_dict_sha256(_module(classifier, "merged model").state_dict())
    # a merge is no release: its base's published figures do not apply to it
    return {"tags": tags, "weights": None, "weights_sha256": sha256, "release": None}


def cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy on the CPU: endpoint weights kept for every alpha must not hold GPU memory."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def arch_of(spec: str, options: Mapping[str, str]) -> str:
    """The architecture a ``NAME:ARG`` spec builds (a custom config's name, else ARG)."""
    name, _, arg = spec.partition(":")
    config = options.get("config")
    return Path(config).stem if config else (arg or name)


def weights_id(spec: str, options: Mapping[str, str]) -> str:
    """A short, stable id of the weights a spec loads: the hash of its weights file, else of
    the spec and its options (a pretrained tag or a built-in model names its weights)."""
    import hashlib

    from models.checkpoints import file_sha256
    from models.wiseft import SHORT_HASH

    weights = options.get("weights")
    if weights and Path(weights).is_file():
        return file_sha256(weights)[:SHORT_HASH]
    text = json.dumps({"model": spec, "options": {k: v for k, v in options.items() if k != "label"}}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT_HASH]


def refuse_activation_mix(zeroshot: Classifier, other: Classifier, role: str) -> None:
    """Both models of a weight-space merge must be built with one activation."""
    a, b = zeroshot.describe().get("activation"), other.describe().get("activation")
    if a and b and a != b:
        raise ValueError(f"{role} {other.name} is built with {b} but the zero-shot model {zeroshot.name} with {a}; "
                         "weights trained with different activations cannot be merged")


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
    usually built from different checkpoints (and often different factories). The fine-tuned
    endpoint is built with the zero-shot model's activation (its state dict alone cannot say
    it), and one that says otherwise is refused."""

    def __init__(self, zeroshot: tuple[str, dict[str, str]], finetuned: tuple[str, dict[str, str]]) -> None:
        self.zeroshot, self.finetuned = zeroshot, finetuned
        self._model: Classifier | None = None
        self._states: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self._tags: tuple[list[str], list[str]] = ([], [])
        self._hashes: dict[float, str] = {}  # alpha -> sha256 of the merged weights, hashed once
        self._checked: Classifier | None = None

    def _finetuned_options(self, zs: Classifier) -> dict[str, str]:
        spec, options = self.finetuned
        activation = zs.describe().get("activation")
        if activation and spec.partition(":")[0] in CLIP_FACTORIES:
            given = options.get("activation")
            if given and given != activation:
                raise ValueError(f"--finetuned {spec}: activation={given}, but the zero-shot model is {activation} "
                                 f"({zs.describe().get('activation_source')}); the two endpoints must share one")
            return {**options, "activation": activation}
        return options

    def _endpoints(self) -> tuple[Classifier, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        if self._model is None or self._states is None:
            zs = _build(*self.zeroshot)
            zs_state = cpu_copy(_module(zs, "--zeroshot").state_dict())
            ft = _build(self.finetuned[0], self._finetuned_options(zs))
            refuse_activation_mix(zs, ft, "the fine-tuned model")
            zs_tags = list(zs.describe().get("tags", []))
            del zs
            ft_state = cpu_copy(_module(ft, "--finetuned").state_dict())
            self._model, self._states = ft, (zs_state, ft_state)
            self._tags = (zs_tags, list(ft.describe().get("tags", [])))
        return self._model, self._states

    def check(self) -> Classifier:
        """Both endpoints as checked builds (``harness.api.checking_build``), refused as
        ``_endpoints`` would refuse them, and of one architecture; kept for every alpha and never
        used to predict (the fine-tuned one stands for the merged model's head)."""
        from harness.api import checking_build
        from models.merging import check_compatible

        if self._checked is None:
            with checking_build():
                zs = _build(*self.zeroshot)
                ft = _build(self.finetuned[0], self._finetuned_options(zs))
            refuse_activation_mix(zs, ft, "the fine-tuned model")
            check_compatible([_module(zs, "--zeroshot").state_dict(), _module(ft, "--finetuned").state_dict()],
                             [self.zeroshot[0], self.finetuned[0]])
            self._checked = ft
        return self._checked

    def classifier(self, alpha: float) -> Classifier:
        from models.checkpoints import state_dict_sha256
        from models.wiseft import wiseft_weights

        model, (zs, ft) = self._endpoints()
        merged = wiseft_weights(zs, ft, alpha, labels=(self.zeroshot[0], self.finetuned[0]))
        if alpha not in self._hashes:
            self._hashes[alpha] = state_dict_sha256(merged)  # on the CPU copy, once per alpha
        _load(_module(model, "wiseft"), merged, "wiseft")
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
        return merged_description(classifier, wiseft_tags(*self._tags, alpha), self._hashes.get(alpha))


def wiseft_name(alpha: float, zeroshot: tuple[str, Mapping[str, str]], finetuned: tuple[str, Mapping[str, str]]) -> str:
    """``wiseft:ARCH[zs HASH,ft HASH](alpha=A)``: the architecture and both endpoints' weights."""
    from models.wiseft import wiseft_label

    return wiseft_label(arch_of(*zeroshot), weights_id(*zeroshot), weights_id(*finetuned), alpha)


def refuse_label(command: str, names: str, *models: tuple[str, Mapping[str, str]]) -> None:
    """``label=`` names a ``shiftbench run`` model in results; a sweep names its cells from the
    architecture and the weights, so the option would only enter the cells' identity."""
    from harness.config import LABEL_OPTION

    for spec, options in models:
        if options.get(LABEL_OPTION):
            raise ValueError(f"{spec}: option {LABEL_OPTION}={options[LABEL_OPTION]} names a model of `shiftbench run`; "
                             f"`shiftbench {command}` names its cells {names} from the architecture and the weights, "
                             f"so it would not be used: drop {LABEL_OPTION}=")


def wiseft_sources(
    zeroshot: tuple[str, dict[str, str]], finetuned: tuple[str, dict[str, str]], alphas: list[float]
) -> list[ModelSource]:
    """One cell per alpha; alpha 0 is the zero-shot model, 1 the fine-tuned one (exactly)."""
    refuse_label("wiseft", "wiseft:ARCH[zs HASH,ft HASH](alpha=A)", zeroshot, finetuned)
    if (zeroshot[0], dict(zeroshot[1])) == (finetuned[0], dict(finetuned[1])):
        raise ValueError(f"the zero-shot and the fine-tuned endpoint are the same model ({zeroshot[0]} with the same "
                         "options, --model-arg ones included), so every alpha would give that model; give the fine-tuned "
                         "one its own weights (--finetuned-arg weights=PATH)")
    sweep = WiseFT(zeroshot, finetuned)
    sources = []
    for alpha in alphas:
        identity = json.dumps({"wiseft": [list(zeroshot), list(finetuned)], "alpha": alpha}, sort_keys=True)
        name = wiseft_name(alpha, zeroshot, finetuned)
        sources.append(ModelSource(name, identity, lambda a=alpha: sweep.classifier(a), sweep.provenance(alpha),
                                   lambda c, a=alpha: sweep.describe(a, c), sweep.check))
    return sources


# -- soups --------------------------------------------------------------------------------


def file_identity(path: Path) -> list[Any]:
    """Path, size and modification time: a rewritten checkpoint makes new cells."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class Soup:
    """The base model (architecture) with merged weights loaded; built lazily. Ingredients are
    read under the base model's parameter names, whatever prefix their files use
    (``models.soups.view``), and named by their content hashes."""

    def __init__(self, base: str, options: dict[str, str], files: list[Path]) -> None:
        from models.checkpoints import file_sha256

        self.base, self.options = base, options
        self.arch = arch_of(base, options)
        self.shas = {f: file_sha256(f) for f in files}
        self._model: Classifier | None = None
        self._checked: Classifier | None = None

    def _base(self) -> Classifier:
        if self._model is None:
            model = _build(self.base, self.options)
            self._check_activations(model)
            self._model = model
        return self._model

    def _check_activations(self, model: Classifier) -> None:
        """Every ingredient whose own file says an activation must say the base's."""
        from models.clip import check_same_activation

        info = model.describe()
        if info.get("activation"):
            for path, sha in self.shas.items():
                check_same_activation((info["activation"], info.get("activation_source", "")), path, sha, info["arch"])

    def view(self, path: Path):
        """The ingredient file, lazily, under the base model's names."""
        from models.soups import view

        return view(path, list(_module(self._base(), "soup").state_dict()))

    def check(self, files: list[Path]) -> Classifier:
        """The base as a checked build (``harness.api.checking_build``; kept, never used to
        predict), with every one of ``files`` read under its names and shapes, as a merge of
        them would be."""
        from harness.api import checking_build
        from models.merging import check_compatible
        from models.soups import view

        if self._checked is None:
            with checking_build():
                model = _build(self.base, self.options)
            self._check_activations(model)
            self._checked = model
        state = _module(self._checked, "soup").state_dict()
        check_compatible([state, *(view(f, list(state)) for f in files)], [f"the base model {self.base}", *map(str, files)])
        return self._checked

    def classifier(self, state: Mapping[str, torch.Tensor]) -> Classifier:
        model = self._base()
        _load(_module(model, "soup"), {k: state[k] for k in state}, "soup")
        return model

    def name(self, kind: str, files: list[Path], detail: str) -> str:
        """``KIND:ARCH[HASH](detail)``: what it is, of which architecture, from which weights."""
        from models.soups import soup_id

        return f"{kind}:{self.arch}[{soup_id([self.shas[f] for f in files])}]({detail})"

    def ingredient(self, path: Path) -> ModelSource:
        identity = json.dumps({"base": self.base, "ingredient": file_identity(path), "options": self.options}, sort_keys=True)
        return ModelSource(
            self.name("ingredient", [path], path.name), identity, lambda: self.classifier(self.view(path)),
            {"ingredient": str(path), "ingredient_sha256": self.shas[path]}, self.describe, lambda: self.check([path]),
        )

    def describe(self, classifier: Classifier, soup: bool = False) -> dict[str, Any]:
        """The base's tags (plus ``soup``) and the hash of the weights loaded into it."""
        tags = list(classifier.describe().get("tags", []))
        return merged_description(classifier, [*tags, "soup"] if soup and "soup" not in tags else tags)

    def of(self, recipe: str, files: list[Path], extra: dict[str, Any]) -> ModelSource:
        from models.merging import average
        from models.soups import ingredient_entry

        identity = json.dumps({"base": self.base, "soup": [file_identity(f) for f in files], "options": self.options}, sort_keys=True)
        return ModelSource(
            self.name("soup", files, f"{recipe},n={len(files)}"),
            identity,
            lambda: self.classifier(average([self.view(f) for f in files])),
            {"ingredients": [ingredient_entry(f, self.shas[f]) for f in files], **extra},
            lambda c: self.describe(c, soup=True),
            lambda: self.check(files),
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
# Base models whose own weights-defining options a soup's ingredients replace entirely.
REPLACED_BY_INGREDIENTS = {
    "clip": "its zero-shot head (classnames=, templates=, scale=)",
    "wiseft": "its endpoints and alpha=",
    "soup": "its ingredients=",
}


def soup_sources(ingredients: list[str], recipe: str, held_out: str | None, config: RunConfig,
                 world: Any = None) -> list[ModelSource]:
    """The soup to report: uniform over all ingredients, or greedy on ``held_out``.

    Greedy selection runs every ingredient and every candidate as a cell on the held-out
    shift (resumable, cached images; on every rank of a torchrun ``world``), and writes its
    decisions to ``soups/greedy.json``, naming each ingredient by file name and sha256 so
    ``shiftbench merge --method greedy`` rebuilds the same soup from it."""
    from models.soups import ingredient_entry, list_ingredients

    if len(config.models) != 1:
        raise ValueError("a soup needs exactly one --model NAME:ARG giving the architecture the ingredients load into")
    base, options = config.model_specs()[0]
    factory, _, arg = base.partition(":")
    if factory in REPLACED_BY_INGREDIENTS:
        raise ValueError(f"--model {base}: the soup loads the ingredients' weights, heads included, over the base model, "
                         f"so {REPLACED_BY_INGREDIENTS[factory]} would not be used; use --model finetuned:{arg or 'ARCH'}")
    files = list_ingredients(ingredients)
    refuse_label("soup", "soup:ARCH[HASH](RECIPE,n=N)", (base, options))
    if base.partition(":")[0] in WEIGHTED_FACTORIES and "weights" not in options:
        options = {**options, "weights": str(files[0])}  # any ingredient builds the architecture
    soup = Soup(base, options, files)
    if recipe == "uniform":
        if held_out:
            raise ValueError(f"--held-out {held_out} is what --recipe greedy selects on; the uniform soup (the default "
                             "recipe) averages every ingredient and would not use it: add --recipe greedy, or drop --held-out")
        return [soup.of("uniform", files, {"recipe": "uniform"})]
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

    if world is None:  # the selection runs on every rank torchrun started, as the run itself does
        from harness.engine.distributed import World
        from harness.engine.predict import resolve_device

        world = World.from_env(resolve_device(config.device).type)
    by_name = {f.name: f for f in files}
    if len(by_name) != len(files):
        raise ValueError("ingredient files must have distinct file names (records name them)")
    # The selection writes cells: first the whole plan is checked, the run it selects for (any
    # soup of these ingredients stands for the one chosen) and the held-out cells of each ingredient.
    Engine(config, log=RunLog(config.json), world=world).check([soup.of("greedy", files, {})])
    select_config = dataclasses.replace(config, shifts=(held_out,))
    engine = Engine(select_config, log=RunLog(config.json), world=world)
    engine.check([soup.ingredient(f) for f in files])
    scores = {name: held_out_score(engine, soup.ingredient(f), held_out) for name, f in by_name.items()}

    order = sorted(by_name, key=lambda n: -scores[n])  # greedy_soup's order (stable on ties)
    tried, kept, best = [order[0]], [order[0]], [scores[order[0]]]

    def evaluate_next(state: dict[str, torch.Tensor]) -> float:
        """greedy_soup tries ``kept + [next]`` in order; name the candidate cell after it."""
        name = order[len(tried)]
        tried.append(name)
        names = [*kept, name]
        chosen = [by_name[n] for n in names]
        identity = json.dumps({"base": soup.base, "soup": [file_identity(f) for f in chosen], "options": soup.options}, sort_keys=True)
        source = ModelSource(soup.name("candidate", chosen, f"n={len(names)}"), identity, lambda: soup.classifier(state),
                             {"candidate": names}, lambda c: soup.describe(c, soup=True), lambda: soup.check(chosen))
        score = held_out_score(engine, source, held_out)
        if score > best[0]:
            kept.append(name)
            best[0] = score
        return score

    entries = {n: ingredient_entry(f, soup.shas[f]) for n, f in by_name.items()}
    _, record = greedy_soup({n: soup.view(by_name[n]) for n in order}, scores, evaluate_next, held_out, entries=entries)
    if record.accepted != kept:
        raise AssertionError(f"greedy soup bookkeeping diverged: {record.accepted} vs {kept}")
    path = Path(config.run_dir) / "soups" / "greedy.json"
    if engine.world.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record.to_dict(), indent=2) + "\n")
    chosen = [by_name[n] for n in record.accepted]
    return [soup.of("greedy", chosen, {"recipe": "greedy", "held_out": held_out, "record": str(path)})]
