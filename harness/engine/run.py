"""Plan and run cells: models x (shifts + their ID references) -> predictions -> results.

A cell is one (model, shift) prediction pass; a score task is one results row. An OOD
shift with an ``id_reference`` adds that ID shift's cell; if it also has a ``class_map``,
the ID predictions are scored again through ``id_view`` on the OOD shift's classes
(``imagenet@imagenet-r``) — predicted once, scored as many views as needed. Cells already
scored with the same cell hash are skipped; cells predicted but not scored are scored from
disk; everything else is predicted, verified, saved, then scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TextIO

import numpy as np

from harness import __version__
from harness.api import Classifier, ClassMap, Predictions, Result, Shift, ShiftSpec, id_view_setting
from harness.config import LABEL_OPTION, RunConfig
from harness.engine.distributed import World
from harness.engine.identity import identity_changes
from harness.engine.store import RunDir
from harness.scoring import (
    ScoreTask,
    SpecOf,
    completed_spec,
    make_result,
    registry_specs,
    row_id_setting,
    score_task,
    task_of_row,
)

__all__ = ["ScoreTask", "completed_spec", "make_result", "registry_specs", "score_task", "task_of_row"]  # re-exported: the core owns them


class Scorer(Protocol):
    """What ``harness.metrics`` provides."""

    def score(self, preds: Predictions, spec: ShiftSpec) -> tuple[dict[str, float], dict[str, int]]: ...

    def id_view(self, preds: Predictions, class_map: ClassMap, setting: str) -> Predictions: ...


def default_scorer() -> Scorer | ModuleType:
    from harness import metrics

    return metrics


@dataclass(frozen=True)
class ModelSource:
    """A model to evaluate: ``name`` for results and files, ``identity`` (what fixes its
    weights: spec string, checkpoint paths, alpha) hashed into each cell, ``build`` to load it."""

    name: str
    identity: str
    build: Callable[[], Classifier]
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # added to describe()
    describe: Callable[[Classifier], Mapping[str, Any]] | None = None  # overrides describe() once built
    # builds it only to check it (``harness.api.checking_build``); None: ``build`` does, as a
    # factory does for a checked build. A source whose build keeps what it built needs its own.
    check: Callable[[], Classifier] | None = None

    def checked(self) -> Classifier:
        """The model as a checked build: every input refused here, before anything is written."""
        from harness.api import checking_build

        with checking_build():
            return (self.check or self.build)()


def plan_tasks(shifts: tuple[str, ...] | list[str], spec_of: SpecOf) -> list[ScoreTask]:
    """Requested shifts plus their ID references and ID views, each once, ID first."""
    tasks: dict[str, ScoreTask] = {}
    for name in shifts:
        spec = spec_of(name)
        ref = spec.id_reference
        if ref and ref != name:
            spec_of(ref)  # unknown reference: fail at planning, not mid-run
            tasks.setdefault(ref, ScoreTask(ref, ref))
            if spec.class_map is not None:
                view = id_view_setting(ref, name)
                tasks.setdefault(view, ScoreTask(view, ref, view_of=name))
        tasks.setdefault(name, ScoreTask(name, name))
    return list(tasks.values())


#: The shifts whose data is a user's own dataset, named after its folder (``folder:pets``).
USER_SETTING_PREFIXES = ("folder", "wds")

#: Seconds between a torchrun job's tries for a cell another process holds.
CELL_LOCK_POLL_S = 1.0


def check_id_shift(config: RunConfig, spec_of: SpecOf) -> None:
    """Refuse an ``--id-shift`` that cannot apply, before anything runs: a run with no labelled
    ``folder``/``wds`` shift, an ID that is the user shift itself, a user shift with a class map
    (its ID reference would have to be scored on its classes in this run), or an ID setting no
    shift names. It applies to every user shift of the run; registered shifts keep their own."""
    from harness.api import is_unlabeled, is_user_shift

    ref = config.id_shift
    if not ref:
        return
    specs = [(name, spec_of(name)) for name in config.shifts]
    user = [(name, spec) for name, spec in specs if is_user_shift(spec)]
    if not user:
        unlabeled = [name for name, spec in specs if is_unlabeled(spec)]
        why = (f"; {', '.join(unlabeled)} holds unlabelled images, never scored (`shiftbench estimate --id ID` names "
               "their ID reference)" if unlabeled else "")
        raise ValueError(
            f"--id-shift {ref} names the ID reference of a user dataset, but this run has no labelled folder or wds shift "
            f"(--shifts {','.join(config.shifts)}){why}. Registered shifts pair with their own ID reference: drop --id-shift, "
            "or run it with --shifts folder (or wds)"
        )
    for name, spec in user:
        if ref in (name, spec.name):
            raise ValueError(
                f"--id-shift {ref} is the shift {spec.name} itself; name the ID dataset its results are compared with, "
                "e.g. --id-shift imagenet, or --id-shift folder:<ID folder name> for a user dataset run in its own --run-dir"
            )
        if spec.class_map is not None:
            raise ValueError(
                f"--id-shift {ref}: {spec.name} has a class map onto {spec.label_space}, so it pairs with {ref} scored on its "
                "classes, which this run cannot score (its data root is the user dataset); drop --id-shift and pair the "
                f"rows in the report (`shiftbench report --id-shift {spec.name}=ID`)"
            )
    head, colon, tail = ref.partition(":")
    if colon and head in USER_SETTING_PREFIXES and tail:
        return  # another user dataset, run in its own run directory
    if ref in USER_SETTING_PREFIXES:
        raise ValueError(f"--id-shift {ref}: a user dataset's setting is named after its folder, {ref}:<folder name>")
    from harness.registry import get_shift

    try:
        spec = get_shift(ref).spec
    except ValueError as exc:
        raise ValueError(f"--id-shift {ref}: {exc} A user dataset's setting is folder:<folder name> or wds:<folder name>.") from None
    if is_unlabeled(spec):
        raise ValueError(f"--id-shift {ref}: unlabelled images have no accuracy to pair with; name a labelled ID setting")


def model_from_spec(spec: str, options: dict[str, str]) -> ModelSource:
    """``NAME:ARG`` (``--model``) plus its options -> a lazily built model.

    The option ``label`` names the model in results and files instead of ``NAME:ARG`` (two
    fine-tuned checkpoints of one architecture need two names); factories never see it.
    """
    from harness.registry import get_model_factory

    name, _, arg = spec.partition(":")
    factory = get_model_factory(name)  # unknown names fail now, with suggestions
    factory_options = {k: v for k, v in options.items() if k != LABEL_OPTION}
    identity = json.dumps({"model": spec, "options": factory_options}, sort_keys=True)
    label = options.get(LABEL_OPTION) or spec
    return ModelSource(name=label, identity=identity, build=lambda: factory(arg, **factory_options))


def models_from_config(config: RunConfig) -> list[ModelSource]:
    """The config's models, refusing two that would share a name in results."""
    sources: dict[str, ModelSource] = {}
    for spec, options in config.model_specs():
        source = model_from_spec(spec, options)
        if source.name in sources and sources[source.name].identity != source.identity:
            raise ValueError(
                f"two models are both named {source.name!r} but differ in their options; "
                "give each its own --model-arg label=NAME after its --model"
            )
        sources.setdefault(source.name, source)
    return list(sources.values())


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunLog:
    """Human lines on stderr, or with ``json`` one JSON object per event on stdout."""

    def __init__(self, json_mode: bool = False, out: TextIO | None = None, err: TextIO | None = None, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        if self.quiet:
            return
        if self.json_mode:
            print(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}, default=str), file=self.out, flush=True)
        elif message:
            print(message, file=self.err, flush=True)


class Engine:
    """Runs the plan for each model into one run directory."""

    def __init__(
        self,
        config: RunConfig,
        scorer: Any = None,
        get_shift: Callable[[str], Shift] | None = None,
        log: RunLog | None = None,
        world: World | None = None,
        redo: bool = False,
    ) -> None:
        from harness.registry import get_shift as registry_get_shift

        self.config = config
        self.run_dir = RunDir(config.run_dir)
        self.scorer = scorer if scorer is not None else default_scorer()
        self._get_shift = get_shift or registry_get_shift
        self._shifts: dict[str, Shift] = {}
        self._specs: dict[str, ShiftSpec] = {}
        self._manifests: dict[str, Any] = {}
        self._identities: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self.redo = redo  # predict every cell again, even if done (``run --redo``)
        self.world = world or World.single()
        self.log = log or RunLog(config.json)
        if not self.world.is_main:
            self.log = RunLog(config.json, quiet=True)
        self.summary: list[dict[str, Any]] = []
        self._agreement_checked: set[str] = set()  # reduced precision is checked once per model

    def get_shift(self, name: str) -> Shift:
        if name not in self._shifts:
            self._shifts[name] = self._get_shift(name)
        return self._shifts[name]

    def spec(self, name: str) -> ShiftSpec:
        """The shift's spec completed from the data (ObjectNet's class map comes from its files)."""
        if name not in self._specs:
            self._specs[name] = completed_spec(self.get_shift(name), self.root, self.config.split)
        return self._specs[name]

    @property
    def root(self) -> Path:
        if not self.config.data_root:
            raise ValueError("no --data-root given; point it at the folder holding the shifts' data")
        return Path(self.config.data_root)

    def expected_size(self, name: str) -> int | None:
        """Published size of the split; for the default split, as completed from the data
        (a user ``folder`` dataset's size is what its folders hold)."""
        from harness.engine.predict import resolve_split

        shift = self.get_shift(name)
        split = resolve_split(shift, self.config.split)
        if split == shift.spec.default_split:
            size = self.spec(name).expected_size  # completed from the data (a user folder's own count)
        else:
            size = shift.expected_size(split)
        return size if size else None  # 0: unknown (a webdataset without its manifest)

    def manifest(self, name: str) -> Any:
        from harness.engine.predict import check_manifest, read_manifest, resolve_split

        if name not in self._manifests:
            shift = self.get_shift(name)
            try:
                m = read_manifest(shift, self.root, resolve_split(shift, self.config.split), name)
                check_manifest(m, self.spec(name), self.expected_size(name), self.config.allow_incomplete)
            except (FileNotFoundError, ValueError) as exc:
                needed_by = [s for s in self.config.shifts if s != name and self.spec(s).id_reference == name]
                if name in self.config.shifts or not needed_by:
                    raise
                raise type(exc)(f"{name} is the ID reference of {', '.join(needed_by)} and is evaluated with it: {exc}") from None
            self._manifests[name] = m
        return self._manifests[name]

    def run(self, models: list[ModelSource]) -> list[dict[str, Any]]:
        tasks = self.check(models)
        with self.world.together("opening the run directory"):
            if self.world.is_main:
                adopted = self.run_dir.adopt_config(self.config)
                if adopted.id_shift != self.config.id_shift:  # the directory's, named by an earlier run
                    self.config = dataclasses.replace(self.config, id_shift=adopted.id_shift)
        for model in models:
            self._run_model(model, tasks)
        return self.summary

    def check(self, models: list[ModelSource]) -> list[ScoreTask]:
        """Every check of the plan, before anything is written (a refused run leaves the file
        system as it was): the run directory's settings and decoder, every dataset's manifest,
        and each model with a cell to predict built as a checked build (``harness.api.checking_build``:
        options, files, checkpoints against their architecture) and fitted to those cells'
        shifts. Returns the score tasks."""
        from harness.api import building_on
        from harness.engine.predict import check_fits, resolve_device

        tasks = plan_tasks(self.config.shifts, self.spec)
        cells = list(dict.fromkeys(t.shift for t in tasks))
        with self.world.together("checking the plan"):
            self.run_dir.check_config(self.config)
            self._refuse_other_decoders()
            for c in cells:
                self.manifest(c)
            for model in models:
                predict = [c for c in cells if self._cell_state(model, c, [t for t in tasks if t.shift == c], load=False)[0] == "predict"]
                if predict:
                    with building_on(str(resolve_device(self.config.device))):
                        checked = model.checked()
                    for c in predict:
                        check_fits(checked, self.spec(c))
        return tasks

    def cell_identity(self, model: ModelSource, shift: str) -> tuple[dict[str, Any], str]:
        """The cell's identity (``harness.engine.identity``) and its hash; reads the manifest."""
        from harness.engine.identity import cell_hash, cell_identity

        key = (model.identity, shift)
        if key not in self._identities:
            identity = cell_identity(
                self.config, model.identity, shift, self.manifest(shift).digest(), self.config.data_root, self.decoder(),
                self.manifest(shift).files,
            )
            self._identities[key] = (identity, cell_hash(identity))
        return self._identities[key]

    def decoder(self) -> str:
        """The JPEG decoder label every cell of this run uses (part of each cell's identity)."""
        from harness.engine.gpu_decode import planned_decoder
        from harness.engine.predict import resolve_device

        return planned_decoder(self.config.decoder, resolve_device(self.config.device))

    def _refuse_other_decoders(self) -> None:
        """One run directory, one JPEG decoder: its rows are compared with one another."""
        decoder = self.decoder()
        used = sorted({str(r.provenance["decoder"]) for r in self.run_dir.read_results() if "decoder" in r.provenance} - {decoder})
        if used:
            raise ValueError(
                f"run directory {self.run_dir.path} holds cells decoded with {', '.join(used)}; this run decodes "
                f"with {decoder} (--decoder {self.config.decoder}); use a new --run-dir, or the decoder it was made with"
            )

    def _cell_state(
        self, model: ModelSource, shift: str, tasks: list[ScoreTask], load: bool = True
    ) -> tuple[str, Predictions | None, str]:
        """What a cell needs now: ``done``, ``score`` (predictions on disk) or ``predict``, with
        the stored predictions to score (read and verified only with ``load``) and, for a cell
        done before, why it runs again."""
        identity, digest = self.cell_identity(model, shift)
        if self.redo:
            return "predict", None, "--redo"
        rows = {r.setting: r for r in self.run_dir.read_results() if r.model == model.name}
        sidecar = self.run_dir.sidecar(model.name, shift)
        stored_ok = sidecar.get("cell_hash") == digest and self.run_dir.predictions_path(model.name, shift).exists()
        current = [rows.get(t.setting) for t in tasks]
        unlabeled = self._unlabeled(shift)  # stored, never scored: no rows to match
        if stored_ok and (unlabeled or all(
            r is not None and r.provenance.get("config_hash") == digest and r.predictions_sha256 == sidecar.get("sha256") for r in current
        )):  # fmt: skip
            # the ID setting is the rows' metadata, not the predictions': a new one rescores them
            moved = [] if unlabeled else [(r.id_setting, self.id_setting(t)) for t, r in zip(tasks, current, strict=True)
                                          if r is not None and r.id_setting != self.id_setting(t)]
            # a class map read from the data's own files (ObjectNet's mappings/) scores, never predicts
            remapped = [] if unlabeled else [t.setting for t, r in zip(tasks, current, strict=True)
                                             if r is not None and r.class_map != self.class_map_digest(t)]
            if not moved and not remapped:
                return "done", None, ""
            if remapped:
                reason = (f"the class map of {', '.join(remapped)} changes (the data's mapping files), "
                          "scored again from its stored predictions")
            else:
                (was, now), *_ = moved
                reason = f"its ID setting changes ({was or 'none'} -> {now or 'none'}), scored again from its stored predictions"
        else:
            reason = ""
            old = next((r for r in current if r is not None and r.provenance.get("config_hash") != digest), None)
            if old is not None:
                reason = identity_changes(old.provenance.get("cell"), identity)
            elif any(r is not None for r in current):
                reason = "its predictions file is missing or no longer matches its results"
        if not load:
            return ("score" if stored_ok else "predict"), None, reason
        preds = self.run_dir.finished_predictions(model.name, shift, digest)
        if preds is not None:
            return "score", preds, reason
        return "predict", None, reason

    def expected_for(self, task: ScoreTask, n_shift: int, n_scored: int) -> int | None:
        """A task's ``n_expected``: its shift's published size, or an ID view's size on the
        complete shift (``harness.scoring.view_expected_size``)."""
        from harness.scoring import view_expected_size

        expected = self.expected_size(task.shift)
        cm = self.spec(task.view_of).class_map if task.view_of else None
        if cm is None:
            return expected
        return view_expected_size(n_scored, n_shift, expected, getattr(self.get_shift(task.shift), "per_class", None), cm)

    def class_map_digest(self, task: ScoreTask) -> str | None:
        """The digest of the class map ``task`` is scored through now (its row's ``class_map``)."""
        cm = self.spec(task.view_of or task.shift).class_map
        return cm.digest() if cm is not None else None

    def id_setting(self, task: ScoreTask) -> str | None:
        """The ID setting ``task``'s row pairs with in this run (``--id-shift`` for a user shift)."""
        return row_id_setting(task, self.spec(task.shift), self.config.id_shift)

    def _unlabeled(self, shift: str) -> bool:
        from harness.api import is_unlabeled

        return is_unlabeled(self.spec(shift))

    def _run_model(self, model: ModelSource, tasks: list[ScoreTask]) -> None:
        cfg = self.config
        cells = list(dict.fromkeys(t.shift for t in tasks))
        cell_tasks = {c: [t for t in tasks if t.shift == c] for c in cells}
        # Every manifest is read (and checked) before the model loads, and the model is built
        # only if some cell needs predicting; each cell is decided again under its lock (rank 0's
        # view for every rank of a torchrun job, as in ``_decide``).
        with self.world.together(f"planning {model.name}"):
            local = {c: self._cell_state(model, c, cell_tasks[c], load=False) for c in cells}
        plan = self.world.from_main({c: (state, None, reason) for c, (state, _, reason) in local.items()})
        if all(state == "done" for state, _, _ in plan.values()):
            for t in tasks:
                self.summary.append({"model": model.name, "setting": t.setting, "status": "skipped"})
            self.log.event("model_skipped", f"{model.name}: all cells done, skipped", model=model.name)
            return
        built: list[Classifier] = []

        def classifier() -> Classifier:
            if not built:
                import torch

                from harness.api import building_on
                from harness.engine.predict import check_fits, resolve_device

                torch.manual_seed(cfg.seed)
                with building_on(str(resolve_device(cfg.device))):
                    built.append(model.build())
                for c in cells:
                    if plan[c][0] == "predict":
                        check_fits(built[0], self.spec(c))
            return built[0]

        with self.world.together(f"loading {model.name}"):
            if any(state == "predict" for state, _, _ in plan.values()):
                classifier()
        for c in cells:
            # One process (or torchrun job) at a time decides, predicts, saves and scores a cell;
            # the ranks of a job act on rank 0's decision, made under the lock (only it writes).
            with self._cell_held(model, c):
                state, preds, reason = self._decide(model, c, cell_tasks[c])
                if state == "done":
                    for t in cell_tasks[c]:
                        self.summary.append({"model": model.name, "setting": t.setting, "status": "skipped"})
                    self.log.event("cell_skipped", f"{model.name} | {c}: done, skipped", model=model.name, shift=c)
                    continue
                if reason:
                    self.log.event("cell_rerun", f"{model.name} | {c}: running again: {reason}", model=model.name, shift=c, reason=reason)
                fresh = state == "predict"  # a rank other than 0 scores nothing: it holds no stored predictions
                if fresh:
                    from harness.engine.predict import check_fits

                    check_fits(classifier(), self.spec(c))
                    preds, stats = self._predict(model, classifier(), c)
                with self.world.together(f"saving and scoring {model.name} | {c}"):
                    if fresh:
                        self._keep(model, classifier(), c, preds, stats)
                    else:
                        stats = self.run_dir.sidecar(model.name, c).get("stats", {})
                        self.log.event("cell_reused", f"{model.name} | {c}: predictions on disk, scoring", model=model.name, shift=c)
                    if self.world.is_main:
                        self._score(model, cell_tasks[c], preds, stats)

    @contextlib.contextmanager
    def _cell_held(self, model: ModelSource, shift: str) -> Iterator[None]:
        """The cell's lock, held by this process; in a torchrun job rank 0 holds it for every
        rank. The ranks wait together by polling (rank 0 tries the lock without waiting and
        tells the others), so no collective sits past the backend's timeout while another
        process holds the cell for as long as its prediction takes."""
        if self.world.size == 1:
            with self.run_dir.cell_lock(model.name, shift):
                yield
            return
        with contextlib.ExitStack() as held:
            waited = False
            while True:
                got = False
                if self.world.is_main:
                    try:
                        held.enter_context(self.run_dir.cell_lock(model.name, shift, wait=False))
                        got = True
                    except BlockingIOError:
                        pass
                if self.world.from_main(got):
                    break
                if not waited:
                    self.log.event("cell_waiting", f"{model.name} | {shift}: another process holds this cell; waiting for it",
                                   model=model.name, shift=shift)
                    waited = True
                time.sleep(CELL_LOCK_POLL_S)
            yield

    def _decide(self, model: ModelSource, shift: str, tasks: list[ScoreTask]) -> tuple[str, Predictions | None, str]:
        """(state, stored predictions, reason) of a cell whose lock is held: this process's view,
        or in a torchrun job rank 0's for every rank (a shared directory may reach another node
        late); only rank 0, which scores, reads stored predictions."""
        if self.world.size == 1:
            return self._cell_state(model, shift, tasks)
        with self.world.together(f"checking {model.name} | {shift}"):
            state, preds, reason = self._cell_state(model, shift, tasks, load=self.world.is_main)
        decided, why = self.world.from_main((state, reason))
        return decided, preds if decided == state else None, why

    def _predict(self, model: ModelSource, classifier: Classifier, shift: str) -> tuple[Predictions, dict[str, Any]]:
        """Every rank's share of the cell, gathered on every rank (collectives inside)."""
        from harness.engine.predict import PredictOptions, predict

        cfg = self.config
        options = PredictOptions(
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            device=cfg.device,
            precision=cfg.precision,
            agreement_sample=0 if model.identity in self._agreement_checked else cfg.agreement_sample,
            min_agreement=cfg.min_agreement,
            cache_dir=cfg.cache_dir,
            progress=cfg.progress and not cfg.json,
            decoder=cfg.decoder,
            skip_bad_images=cfg.skip_bad_images,
        )
        manifest = self.manifest(shift)
        self.log.event("cell_start", f"{model.name} | {shift}: predicting {len(manifest)} images", model=model.name, shift=shift, n=len(manifest))
        return predict(classifier, model.name, self.get_shift(shift), manifest, Path(cfg.data_root), options, self.world)

    def _keep(self, model: ModelSource, classifier: Classifier, shift: str, preds: Predictions, stats: dict[str, Any]) -> None:
        """Verify the gathered predictions and save them (rank 0 writes)."""
        from harness.engine.predict import verify

        manifest = self.manifest(shift)
        skipped = set(stats.get("skipped_keys", ()))
        if skipped:
            self.log.event("images_skipped", f"{model.name} | {shift}: {len(skipped)} undecodable images left out (recorded in the results)", model=model.name, shift=shift, keys=sorted(skipped))
        verify(preds, manifest.without(np.asarray([i for i, k in enumerate(manifest.keys) if k in skipped], dtype=np.int64)), classifier.num_classes)
        self._agreement_checked.add(model.identity)
        stats["model"] = {**classifier.describe(), **model.provenance, **(model.describe(classifier) if model.describe else {}),
                          "precision": stats["numerics"], "device": stats["device"]}  # what ran, set by the engine
        if self.world.is_main:
            identity, cell_hash = self.cell_identity(model, shift)
            self.run_dir.save_predictions(preds, cell_hash, stats, identity)
        self.log.event(
            "cell_predicted",
            f"{model.name} | {shift}: {len(preds)} images in {stats['elapsed_s']:.1f}s ({stats['images_per_s']} img/s, {stats['source']}, {stats['decoder']})",
            model=model.name,
            shift=shift,
            **{k: v for k, v in stats.items() if k != "model"},
        )

    def _score(self, model: ModelSource, tasks: list[ScoreTask], preds: Predictions, stats: dict[str, Any]) -> None:
        from harness.api import is_unlabeled

        cfg = self.config
        if tasks and is_unlabeled(self.spec(tasks[0].shift)):  # stored for label-free analyses, never scored
            for task in tasks:
                self.summary.append({"model": model.name, "setting": task.setting, "status": "unlabeled", "n": len(preds)})
            self.log.event("unlabeled", f"{model.name} | {tasks[0].shift}: no labels; predictions stored for `shiftbench estimate`",
                           model=model.name, shift=tasks[0].shift)
            return
        identity, cell_hash = self.cell_identity(model, tasks[0].shift)
        sha = preds.sha256()
        rows = []
        for task in tasks:
            scored, scored_spec, metrics, groups = score_task(task, preds, self.spec, self.scorer)
            provenance = {
                "harness_version": __version__,
                "git_sha": git_sha(),
                "config_hash": cell_hash,
                "cell": identity,
                "run_config_hash": cfg.config_hash(),
                "seed": cfg.seed,
                "precision": cfg.precision,
                **{k: v for k, v in stats.items()},
            }
            row = make_result(model.name, task, scored, self.spec(task.shift), scored_spec, metrics, groups, sha, provenance,
                              self.expected_for(task, len(preds), len(scored)), cfg.id_shift)
            from reports.published import describe_check, with_published_check

            row = with_published_check(row)
            rows.append(row)
            check = row.provenance.get("published_check")
            self.summary.append({"model": model.name, "setting": task.setting, "status": "new", "n": row.n, **row.metrics,
                                 "images_per_s": stats.get("images_per_s"), **({"published": check["verdict"]} if check else {})})
            self.log.event("scored", "", model=model.name, setting=task.setting, n=row.n, metrics=row.metrics)
            if check:
                self.log.event("published_check", describe_check(model.name, task.setting, check), model=model.name, setting=task.setting, check=check)
        self.run_dir.append_results(rows)


def summary_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("top1", "top5")) -> str:
    """Fixed-width table of what a run produced (percent for readability; files hold fractions)."""
    from harness.metrics import format_metric

    header = ["model", "setting", "n", *metrics, "img/s", "status"]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["model"],
                r["setting"],
                str(r.get("n", "")),
                *[format_metric(m, r[m]) if isinstance(r.get(m), float) else "" for m in metrics],
                "" if r.get("images_per_s") is None else f"{r['images_per_s']:.0f}",
                r["status"],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def run_specs(config: RunConfig | None) -> SpecOf:
    """Specs as a run with ``config`` completes them: its data root and split (none: bare)."""
    return registry_specs(config.data_root, config.split) if config else registry_specs("")


def rescore(run_dir: RunDir, scorer: Any = None, spec_of: SpecOf | None = None) -> list[Result]:
    """Re-derive every result row's metrics from its stored predictions (no model runs).

    Specs come from the registry completed from the run's data root (class maps of some shifts
    ship with the data); a user shift's rows keep the run's ``--id-shift``. Refuses, before it
    writes anything (a lock file included), a run directory without results and a predictions
    file that changed since it was scored. The rows are rewritten under the run directory's
    lock: a row a concurrent ``run`` added or replaced meanwhile (scored just now, from its own
    predictions) is kept as that run wrote it, so no row is lost."""
    from harness.engine.store import result_identity

    scorer = scorer if scorer is not None else default_scorer()
    rows = run_dir.read_results()
    out = _rescored(run_dir, rows, scorer, spec_of)
    with run_dir.locked():
        now = run_dir.read_results()
        if now == rows:
            run_dir.write_results(out)
        else:  # a concurrent run added or replaced rows meanwhile: they stay as it wrote them
            rescored = {result_identity(row): (row, new) for row, new in zip(rows, out, strict=True)}
            kept = []
            for row in now:
                read, new = rescored.get(result_identity(row), (None, None))
                kept.append(new if read == row else row)
            run_dir.write_results(kept)
    return out


def _rescored(run_dir: RunDir, rows: list[Result], scorer: Any, spec_of: SpecOf | None) -> list[Result]:
    if not rows:
        raise FileNotFoundError(f"{run_dir.results_path}: no results to score; run `shiftbench run` first")
    config = run_dir.read_config()
    if spec_of is None:
        spec_of = run_specs(config)
    id_shift = config.id_shift if config else None
    loaded: dict[tuple[str, str], Predictions] = {}
    out = []
    from reports.published import with_published_check

    redo = "rerun the `shiftbench run` command that made it (it predicts such a cell again), or add --redo to it"
    for row in rows:
        path = run_dir.predictions_path(row.model, row.shift)
        if not path.exists():
            raise FileNotFoundError(f"{path}: predictions for {row.model} on {row.setting} are missing; {redo}")
        if (row.model, row.shift) not in loaded:
            loaded[(row.model, row.shift)] = Predictions.load(path)
        preds = loaded[(row.model, row.shift)]
        if preds.sha256() != row.predictions_sha256:
            raise ValueError(f"{path}: changed since it was scored (sha256 differs); {redo}")
        task = task_of_row(row, run_dir.results_path)
        scored, scored_spec, metrics, groups = score_task(task, preds, spec_of, scorer)
        out.append(with_published_check(
            make_result(row.model, task, scored, spec_of(row.shift), scored_spec, metrics, groups, row.predictions_sha256 or "",
                        dict(row.provenance), row.n_expected, id_shift)
        ))
    return out


def all_metric_names(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    from harness.metrics import CALIBRATION_METRICS

    names = {k for r in rows for k, v in r.items() if isinstance(v, float) and k != "images_per_s"}
    ordered = [m for m in ("top1", "top5") if m in names] + sorted(names - {"top1", "top5", *CALIBRATION_METRICS})
    ordered += [m for m in CALIBRATION_METRICS if m in names]
    return tuple(ordered) or ("top1",)

