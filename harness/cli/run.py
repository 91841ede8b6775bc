"""``shiftbench run``, ``score``, ``wiseft`` and ``soup``: everything that makes predictions."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

RUN_SETTINGS = (
    "models",
    "model_args",
    "shifts",
    "data_root",
    "run_dir",
    "split",
    "precision",
    "device",
    "batch_size",
    "workers",
    "cache_dir",
    "agreement_sample",
    "min_agreement",
    "seed",
    "executor",
    "json",
    "progress",
    "allow_incomplete",
    "decoder",
    "skip_bad_images",
    "id_shift",
)


def _tagged(kind: str) -> Any:
    """``--model`` and ``--model-arg`` share one list, in command-line order."""
    return lambda value: (kind, value)


def split_model_items(items: list[tuple[str, str]] | None) -> tuple[list[str] | None, list[str] | None]:
    """Ordered ``--model``/``--model-arg`` -> (model entries with their own options, shared options).

    An option belongs to the nearest ``--model`` before it; options before any ``--model``
    go to every model. ``None`` means "not given", so a config file's values stand.
    """
    from harness.config import model_entry

    shared: list[str] = []
    models: list[tuple[str, list[str]]] = []
    for kind, value in items or []:
        if kind == "model":
            models.append((value, []))
        elif models:
            models[-1][1].append(value)
        else:
            shared.append(value)
    entries = [model_entry(spec, args) for spec, args in models]
    return entries or None, shared or None


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs models (defaults live in RunConfig)."""
    from harness.config import PRECISIONS

    p.add_argument("--shifts", help="comma-separated shift names, e.g. imagenet,imagenet-r")
    p.add_argument("--data-root", help="folder holding the shifts' data")
    p.add_argument("--run-dir", help="where predictions and results.jsonl go (resumable)")
    p.add_argument("--config", help="TOML or JSON file of settings (command line wins)")
    p.add_argument(
        "--model-arg", dest="model_items", action="append", type=_tagged("arg"), metavar="KEY=VALUE",
        help="option for the model named by the --model before it (before any --model: for every model); label=NAME names it in results",
    )
    p.add_argument("--split", help="split to evaluate (default: each shift's default split)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default); bf16 or fp16: autocast (bf16 pays on GPUs and on CPUs with native bf16, "
                   "AVX-512 BF16 or AMX; elsewhere it is emulated and slower than fp32); bf16-weights: weights cast to bf16 "
                   "for the pass (faster still on such CPUs). Reduced precisions are checked against fp32 on a sample. "
                   "Set for every model: models take no precision option")
    p.add_argument("--device", help="auto (default: cuda if available, else cpu), cpu, cuda, cuda:N; every model runs there "
                   "(under torchrun: cuda, each rank on its LOCAL_RANK GPU)")
    p.add_argument("--batch-size", type=int, help="images per batch (default 64; halved automatically on GPU out-of-memory)")
    p.add_argument("--workers", type=int, help="image decoding processes (default 2)")
    p.add_argument("--decoder", choices=("auto", "pil", "torchvision"),
                   help="JPEG decoding: auto (default) and pil decode with PIL (auto keeps PIL until the batched GPU "
                   "path's top-1 effect is measured); torchvision decodes baseline JPEGs in batches on the device "
                   "(nvJPEG on CUDA, recorded as its own fidelity class)")
    p.add_argument("--cache-dir", help="decoded-image cache (default $SHIFTBENCH_CACHE, else $XDG_CACHE_HOME/shiftbench/images or ~/.cache/shiftbench/images)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the decoded-image cache")
    p.add_argument("--agreement-sample", type=int, help="images re-run in fp32 to check bf16/fp16 (default 64)")
    p.add_argument("--min-agreement", type=float, help="minimum top-1 agreement with fp32 on that sample (default 0.95)")
    p.add_argument("--seed", type=int)
    p.add_argument("--allow-incomplete", action="store_true", default=None, help="score a shift whose data has fewer (or more) examples than published; rows keep n and n_expected")
    p.add_argument("--skip-bad-images", action="store_true", default=None, help="leave out images that cannot be decoded; each key is recorded in the results and n counts only the rest")
    p.add_argument("--executor", choices=("local", "ray"), help="run cells here (default) or on a Ray cluster")
    p.add_argument("--json", action="store_true", default=None, help="JSON lines on stdout instead of bars and a table")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.add_argument("--id-shift", metavar="ID",
                   help="the ID setting a folder or wds shift's results are compared with, e.g. imagenet, or folder:NAME for a "
                   "user dataset run in its own --run-dir; written into its rows (id_setting), so `shiftbench report` pairs them "
                   "with no flag. Only rows change: adding or changing it rescores stored predictions, predicts nothing; the run "
                   "directory keeps it until a run names another")
    p.add_argument("--redo", action="store_true", help="predict and score this command's cells again even if done; their rows are replaced")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="predict models on shifts, verify, score, append results.jsonl")
    p.add_argument("--model", dest="model_items", action="append", type=_tagged("model"), metavar="NAME:ARG", help="model to evaluate (repeatable)")
    p.add_argument("--unlabeled", action="store_true",
                   help="the folder shift holds unlabelled images (any layout, ImageNet label space): store predictions "
                   "for `shiftbench estimate`, score nothing (the shift folder-unlabeled)")
    add_engine_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="re-derive results.jsonl from stored predictions (no model runs)")
    p.add_argument("run_dir", help="a run directory written by `shiftbench run`")
    p.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("wiseft", help="WiSE-FT: evaluate weight interpolations of a zero-shot and a fine-tuned model")
    p.add_argument("--zeroshot", required=True, metavar="NAME:ARG", help="the zero-shot model")
    p.add_argument("--zeroshot-arg", action="append", default=[], metavar="KEY=VALUE", help="option for the zero-shot model only")
    p.add_argument("--finetuned", required=True, metavar="NAME:ARG", help="the fine-tuned model")
    p.add_argument("--finetuned-arg", action="append", default=[], metavar="KEY=VALUE", help="option for the fine-tuned model only")
    p.add_argument("--alphas", default="0:1:0.1", help="START:STOP:STEP (inclusive) or a comma list (default 0:1:0.1)")
    add_engine_options(p)
    p.set_defaults(func=cmd_wiseft)

    p = sub.add_parser("soup", help="model soups (uniform or greedy on held-out ID data), evaluated as cells")
    p.add_argument("--model", dest="model_items", action="append", type=_tagged("model"), metavar="NAME:ARG", help="the architecture the ingredients load into")
    p.add_argument("--ingredients", required=True, nargs="+", metavar="PATH", help="ingredient checkpoints (files or folders; safetensors or weights-only torch files)")
    p.add_argument("--recipe", choices=("uniform", "greedy"), default="uniform")
    p.add_argument("--held-out", help="held-out ID shift the greedy recipe selects on (never a reported shift)")
    add_engine_options(p)
    p.set_defaults(func=cmd_soup)


def resolve_config(args: argparse.Namespace, **overrides: Any) -> Any:
    from harness.config import resolve

    cli = {name: getattr(args, name, None) for name in RUN_SETTINGS}
    cli["models"], cli["model_args"] = split_model_items(getattr(args, "model_items", None))
    if getattr(args, "no_cache", False):
        if cli["cache_dir"] is not None:
            raise ValueError(f"--no-cache turns the decoded-image cache off, so --cache-dir {cli['cache_dir']} would not "
                             "be used: drop one of the two")
        cli["cache_dir"] = ""
    cli.update(overrides)
    config = resolve(cli, args.config)
    agreement = [flag for flag, name in (("--agreement-sample", "agreement_sample"), ("--min-agreement", "min_agreement"))
                 if cli.get(name) is not None]
    if agreement and config.precision == "fp32":
        raise ValueError(f"{' and '.join(agreement)} set{'s' if len(agreement) == 1 else ''} the check of a reduced "
                         "precision against fp32, and this run is fp32, so nothing is checked: drop "
                         f"{' and '.join(agreement)}, or pass --precision bf16 (or fp16, bf16-weights)")
    if not config.run_dir:
        raise ValueError("no --run-dir given (nor run_dir in the config file)")
    if not config.shifts:
        raise ValueError("no --shifts given (nor shifts in the config file)")
    return config


def execute(config: Any, sources: list[Any], redo: bool = False) -> int:
    """Print the config, run every model's cells, print the summary."""
    from harness.cli import UserError
    from harness.engine.distributed import RankFailed, World
    from harness.engine.predict import resolve_device
    from harness.engine.run import (
        RunLog,
        all_metric_names,
        check_id_shift,
        plan_tasks,
        run_specs,
        summary_table,
    )

    spec_of = run_specs(config)
    plan_tasks(config.shifts, spec_of)  # unknown names fail before anything is printed
    check_id_shift(config, spec_of)
    log = RunLog(config.json)
    world = World.single() if config.executor == "ray" else World.from_env(resolve_device(config.device))
    try:
        summary = _execute_in(world, config, sources, log, redo)
    except RankFailed as exc:  # another rank's error, already printed there: one line here too
        world.abandon()
        raise UserError(str(exc)) from None
    except BaseException:
        world.abandon()
        raise
    status = 0
    if world.is_main:
        if config.json:
            log.event("summary", rows=summary)
        else:
            print(summary_table(summary, all_metric_names(summary)))
        status = max(alarm_near_chance(config, {s.name for s in sources}, log),
                     alarm_published(config, {s.name for s in sources}, log))
    world.close()
    return status


def _execute_in(world: Any, config: Any, sources: list[Any], log: Any, redo: bool = False) -> list[dict[str, Any]]:
    from harness.engine.run import Engine

    if world.is_main:
        log.event("config", config.describe(), config=config.to_dict(), config_hash=config.config_hash())
    if config.executor == "ray":
        from harness.engine.ray_executor import run_on_ray

        return run_on_ray(config, sources, log, redo)
    return Engine(config, log=log, world=world, redo=redo).run(sources)


def alarm_near_chance(config: Any, models: set[str], log: Any) -> int:
    """Exit status 3 (results kept) when a shift is at chance next to a healthy ID reference."""
    from harness.engine.run import plan_tasks, run_specs
    from harness.engine.sanity import near_chance
    from harness.engine.store import RunDir

    # this run's shifts only: other rows of the directory may come from another --data-root
    planned = {t.shift for t in plan_tasks(config.shifts, run_specs(config))}
    rows = [r for r in RunDir(config.run_dir).read_results() if r.model in models and r.shift in planned]
    messages = near_chance(rows, run_specs(config))
    for message in messages:
        log.event("near_chance", f"WARNING: {message}", detail=message)
        if config.json:
            print(f"WARNING: {message}", file=sys.stderr)
    return 3 if messages else 0


def alarm_published(config: Any, models: set[str], log: Any) -> int:
    """Exit status 3 (results kept) when a known release does not reproduce its published figure."""
    from harness.engine.store import RunDir
    from reports.published import mismatches

    messages = mismatches([r for r in RunDir(config.run_dir).read_results() if r.model in models])
    for message in messages:
        log.event("published_mismatch", message, detail=message)
        if config.json:
            print(message, file=sys.stderr)
    return 3 if messages else 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.engine.run import models_from_config

    config = resolve_config(args)
    if not config.models:
        raise ValueError("no --model given (nor models in the config file)")
    if args.unlabeled:
        if "folder" not in config.shifts:
            raise ValueError("--unlabeled applies to the folder shift: add --shifts folder (or use --shifts folder-unlabeled)")
        config = dataclasses.replace(config, shifts=tuple("folder-unlabeled" if s == "folder" else s for s in config.shifts))
    return execute(config, models_from_config(config), redo=args.redo)


def print_rows(rows: list[Any], as_json: bool) -> None:
    """Result rows on stdout: JSON lines, or one readable line each (metrics in percent, nll in nats)."""
    from harness.metrics import format_metric

    for row in rows:
        if as_json:
            print(row.to_json())
        else:
            metrics = "  ".join(f"{k}={format_metric(k, v)}" for k, v in sorted(row.metrics.items()))
            print(f"{row.model}  {row.setting}  n={row.n}  {metrics}")


def cmd_score(args: argparse.Namespace) -> int:
    from harness.engine.run import rescore
    from harness.engine.store import RunDir

    rows = rescore(RunDir(args.run_dir))
    print_rows(rows, args.json)
    if not args.json:
        print(f"rescored {len(rows)} rows in {RunDir(args.run_dir).results_path}", file=sys.stderr)
    return 0


def cmd_wiseft(args: argparse.Namespace) -> int:
    from harness.config import model_entry
    from harness.engine.sweeps import wiseft_sources
    from models.wiseft import parse_alphas

    alphas = parse_alphas(args.alphas)
    zeroshot = model_entry(args.zeroshot, args.zeroshot_arg)
    finetuned = model_entry(args.finetuned, args.finetuned_arg)
    config = resolve_config(args)
    config = dataclasses.replace(config, models=(zeroshot, finetuned))
    return execute(config, wiseft_sources(*config.model_specs(), alphas), redo=args.redo)


def cmd_soup(args: argparse.Namespace) -> int:
    from harness.engine.sweeps import soup_sources

    config = resolve_config(args)
    return execute(config, soup_sources(args.ingredients, args.recipe, args.held_out, config), redo=args.redo)
