"""Readers for published result formats and the engine's run directories, into ``Result`` rows.

The engine's ``results.jsonl`` rows are read as written. Foreign tables are translated into the
engine's vocabulary (:mod:`reports.vocabulary`): its setting names, figures as fractions in
``metrics``, ``n`` and ``n_expected``, protocol codes, ``id_setting`` and ``main_metric``; their
source and model tags go into ``provenance`` (:mod:`reports.rows`).

Every reader converts units at the boundary: timm and imagenet-testbed publish percent,
open_clip, WiSE-FT, model soups and ``results.jsonl`` fractions. A value outside the format's
unit range is an error naming the file, never silently rescaled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.api import Result
from reports.row_checks import check_result_row, unique_results
from reports.rows import published_result, with_model_tags, with_source
from reports.table import read_table
from reports.timm_tags import timm_tags
from reports.vocabulary import ID_SETTING

# -- timm ------------------------------------------------------------------------------------

#: ``results-<name>.csv`` -> setting. ``-clean`` files are ImageNet val on the 200 R/A classes.
TIMM_FILES = {
    "imagenet": "imagenet",
    "imagenetv2-matched-frequency": "imagenetv2",
    "sketch": "imagenet-sketch",
    "imagenet-r": "imagenet-r",
    "imagenet-r-clean": "imagenet@imagenet-r",
    "imagenet-a": "imagenet-a",
    "imagenet-a-clean": "imagenet@imagenet-a",
}
TIMM_COLUMNS = ("model", "img_size", "top1")

# -- open_clip ----------------------------------------------------------------------------------

OPEN_CLIP_COLUMNS = {
    "ImageNet 1k": "imagenet",
    "ImageNet v2": "imagenetv2",
    "ImageNet Sketch": "imagenet-sketch",
    "ImageNet-R": "imagenet-r",
    "ImageNet-A": "imagenet-a",
    # CLIP_benchmark, which measured open_clip's table, scores ObjectNet with a 113-way zero-shot
    # head from ObjectNet's class names: the engine's ``objectnet-names``, not ``objectnet``.
    "ObjectNet": "objectnet-names",
}
#: open_clip (CLIP_benchmark) scores ObjectNet-1.0 with a 113-way head built from its class names.
OPEN_CLIP_PROTOCOL = {"objectnet-names": {"version": "1.0", "head": "objectnet-113-names", "projection": "none", "crop": "none"}}

# -- imagenet-testbed ---------------------------------------------------------------------------

TESTBED_COLUMNS = {
    "val": ("imagenet", 50_000, {}),
    "imagenetv2-matched-frequency-format-val": ("imagenetv2", 10_000, {"format": "format-val"}),
    # The testbed registers ImageNet-Sketch with size 50,000, used only for its error bars; the
    # accuracies are over the dataset's 50,889 images, so intervals use 50,889.
    "imagenet-sketch": ("imagenet-sketch", 50_889, {}),
    "imagenet-r": ("imagenet-r", 30_000, {}),
    "imagenet-a": ("imagenet-a", 7_500, {}),
    # ObjectNet-1.0-beta through the ImageNet head, max over each class's ids, 2 px border cropped.
    "objectnet-1.0-beta": ("objectnet", 18_514, {"version": "1.0-beta", "head": "imagenet-1k", "projection": "max", "crop": "border-2px"}),
    "val-on-imagenet-r-classes": ("imagenet@imagenet-r", 10_000, {}),
    "val-on-imagenet-a-classes": ("imagenet@imagenet-a", 10_000, {}),
    "val-on-objectnet-classes": ("imagenet@objectnet", 6_250, {"head": "imagenet-1k", "projection": "max"}),
}
TESTBED_TYPES = {
    "STANDARD": ("standard",),
    "MORE_DATA": ("more-data",),
    "ROBUST_INTV": ("robustness-intervention",),
    "LP_ADV": ("robustness-intervention", "lp-adversarial"),
    "LOW_ACCURACY_CNN": ("low-accuracy",),
}

# -- WiSE-FT and model soups (fractions) ----------------------------------------------------------

WISEFT_KEYS = {
    "ImageNet:top1": "imagenet",
    "ImageNetV2:top1": "imagenetv2",
    "ImageNetSketch:top1": "imagenet-sketch",
    "ImageNetR:top1": "imagenet-r",
    "ImageNetA:top1": "imagenet-a",
    "ObjectNet:top1": "objectnet",
}
SOUP_KEYS = {
    "ImageNet": "imagenet",
    "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet-sketch",
    "ImageNetR": "imagenet-r",
    "ImageNetA": "imagenet-a",
    "ObjectNet": "objectnet",
}
#: Both codebases score ObjectNet-1.0 through the ImageNet head, max over each class's ids; their
#: border crop is never applied (it is wrapped around the transform after the dataset is built).
WF_PROTOCOL = {"objectnet": {"version": "1.0", "head": "imagenet-1k", "projection": "max", "crop": "none"}}

FORMATS = ("timm", "open_clip", "imagenet-testbed", "wiseft", "soups", "results", "shiftbench")


def _fraction(value: Any, scale: float, where: str, what: str) -> float | None:
    """Parse one accuracy; ``scale`` 100 for percent files. Blank -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(str(value).replace(",", ""))
    except ValueError:
        raise ValueError(f"{where}: {what}: {value!r} is not a number") from None
    if math.isnan(v):
        return None
    limit = 100.0 if scale == 100 else 1.0
    if not 0.0 <= v <= limit:
        hint = " (looks like percent; this format holds fractions)" if scale == 1 and v <= 100 else ""
        raise ValueError(f"{where}: {what}: {v} is outside [0, {limit:g}]{hint}")
    return v / scale


def _require(columns: Iterable[str], needed: Iterable[str], path: Path, fmt: str) -> None:
    missing = [c for c in needed if c not in set(columns)]
    if missing:
        raise ValueError(f"{path}: {fmt} file lacks columns {missing}; is --format right?")


def _check_not_fractions(values: list[float], path: Path) -> None:
    """A percent file whose ImageNet accuracies are all <= 1 holds fractions: refuse it."""
    if values and max(values) <= 0.01:
        raise ValueError(f"{path}: every ImageNet accuracy is <= 1 in a percent format; the file holds fractions")


def _check_timm_unit(rec: Mapping[str, Any], acc: float, where: str) -> None:
    """timm writes ``top1_err = 100 - top1``: a row whose two add up to 1 holds fractions (read
    as percent they would be a hundred times too small, on any shift's file, not only ImageNet's)."""
    err = rec.get("top1_err")
    try:
        total = 100 * acc + float(str(err).replace(",", ""))
    except ValueError:
        return
    if abs(total - 1.0) < 1e-3 and abs(total - 100.0) > 1e-3:
        raise ValueError(f"{where}: top1 {rec['top1']} and top1_err {err} add up to 1, not 100: the file holds fractions; "
                         "timm results files hold percent")


def read_timm_csv(path: Path, setting: str | None = None, source: str = "timm", sized: frozenset[str] = frozenset()) -> list[Result]:
    """One timm ``results-<set>.csv`` (percent). Models at several sizes, in this file or in
    ``sized`` (the models a folder holds at several sizes), are named ``model@<size>px``."""
    path = Path(path)
    if setting is None:
        m = re.fullmatch(r"results-(.+)\.csv", path.name)
        setting = TIMM_FILES.get(m.group(1)) if m else None
        if setting is None:
            raise ValueError(
                f"{path}: cannot tell the setting of a timm results file from its name; "
                f"expected results-<{'|'.join(TIMM_FILES)}>.csv"
            )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require(reader.fieldnames or (), TIMM_COLUMNS, path, "timm")
        recs = list(reader)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["model"]] = counts.get(r["model"], 0) + 1
    rows, vals = [], []
    for line, r in enumerate(recs, start=2):
        acc = _fraction(r["top1"], 100, f"{path}:{line}", "top1")
        if acc is None:
            continue
        _check_timm_unit(r, acc, f"{path}:{line}")
        vals.append(acc)
        name = r["model"] if counts[r["model"]] == 1 and r["model"] not in sized else f"{r['model']}@{r['img_size']}px"
        rows.append(published_result(source, name, setting, {"top1": acc}, None, {"img_size": r["img_size"]}, timm_tags(r["model"]),
                                     f"{path}:{line}"))
    if setting == ID_SETTING:
        _check_not_fractions(vals, path)
    return rows


def read_timm_dir(folder: Path, source: str = "timm") -> list[Result]:
    """Every known ``results-*.csv`` in a timm ``results/`` folder."""
    folder = Path(folder)
    files = {setting: p for stem, setting in TIMM_FILES.items() if (p := folder / f"results-{stem}.csv").exists()}
    if not files:
        raise FileNotFoundError(f"{folder}: no timm results-*.csv files found")
    # A model evaluated at 288 px on ImageNet and at 224 px on a shift is two models, never one
    # point pairing the two resolutions: the size joins the name wherever the folder has several.
    sizes: dict[str, set[str]] = {}
    for p in files.values():
        with open(p, newline="") as fh:
            for r in csv.DictReader(fh):
                if r.get("model") is not None:
                    sizes.setdefault(r["model"], set()).add(str(r.get("img_size")))
    sized = frozenset(m for m, s in sizes.items() if len(s) > 1)
    return [row for setting, p in files.items() for row in read_timm_csv(p, setting, source, sized)]


def read_open_clip(path: Path, source: str = "open_clip") -> list[Result]:
    """open_clip's ``openclip_results.csv`` (zero-shot, fractions). Models are ``clip:<name>@<pretrained>``."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require(reader.fieldnames or (), ("name", "pretrained", *OPEN_CLIP_COLUMNS), path, "open_clip")
        recs = list(reader)
    rows = []
    for line, r in enumerate(recs, start=2):
        model = f"clip:{r['name']}@{r['pretrained']}"
        tags = ("clip", "clip-zero-shot", "more-data")
        for col, setting in OPEN_CLIP_COLUMNS.items():
            acc = _fraction(r[col], 1, f"{path}:{line}", col)
            if acc is not None:
                rows.append(published_result(source, model, setting, {"top1": acc}, None, OPEN_CLIP_PROTOCOL.get(setting), tags,
                                             f"{path}:{line}"))
    return rows


def read_testbed(path: Path, types_path: Path | None = None, source: str = "imagenet-testbed") -> list[Result]:
    """imagenet-testbed's ``robustness_top1s.csv`` (percent) with its ``model_types.json``.

    ``types_path`` defaults to ``model_types.json`` beside the CSV; without it models are
    tagged ``untyped`` (never ``standard``), so they stay out of baseline fits.
    """
    path = Path(path)
    types_path = Path(types_path) if types_path else path.with_name("model_types.json")
    types: Mapping[str, Any] = {}
    if types_path.exists():
        try:
            types = json.loads(types_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{types_path}: not valid JSON ({exc})") from None
        bad = (next((k for k, v in types.items() if not isinstance(v, dict)), None)
               if isinstance(types, dict) else "")  # fmt: skip
        if bad is not None:
            raise ValueError(f"{types_path}: expected an object of model -> {{\"type\": ...}}"
                             + (f"; the entry for {bad!r} is not an object" if bad else ""))
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require(reader.fieldnames or (), ("model", "val"), path, "imagenet-testbed")
        recs = list(reader)
    rows, vals = [], []
    for line, r in enumerate(recs, start=2):
        model = r["model"]
        mtype = types.get(model, {}).get("type")
        tags = TESTBED_TYPES.get(mtype, ("other",)) if mtype else ("untyped",)
        for col, (setting, n, proto) in TESTBED_COLUMNS.items():
            acc = _fraction(r.get(col), 100, f"{path}:{line}", col)
            if acc is None:
                continue
            if setting == ID_SETTING:
                vals.append(acc)
            rows.append(published_result(source, model, setting, {"top1": acc}, n, proto, tags, f"{path}:{line}"))
    _check_not_fractions(vals, path)
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path) as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{line}: expected a JSON object per line")
            out.append(obj)
    if not out:
        raise ValueError(f"{path}: no result rows")
    return out


def _arg_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def wiseft_run_names(objs: list[dict[str, Any]]) -> list[str]:
    """Each row's model name without its alpha: the ``model`` arg (else ``load``), and where
    rows of one name come from different runs (a results DB appended by two fine-tunes of one
    architecture), the args that tell the runs apart, ``ViT-B/32 [load=zs.pt,ft1.pt]``, so that
    two runs' sweeps are never drawn as one curve. A run is every arg but ``alpha``."""
    bases = [str(obj.get("model") or obj.get("load") or "model") for obj in objs]
    runs = [{k: json.dumps(v, sort_keys=True) for k, v in obj.items() if ":" not in k and k != "alpha"} for obj in objs]
    names = []
    for base, run in zip(bases, runs, strict=True):
        others = [r for b, r in zip(bases, runs, strict=True) if b == base and r != run]
        if not others:
            names.append(base)
            continue
        keys = sorted(k for k in {*run, *(k for r in others for k in r)} if any(r.get(k) != run.get(k) for r in others))
        obj = objs[runs.index(run)]
        names.append(f"{base} [{', '.join(f'{k}={_arg_text(obj.get(k))}' for k in keys)}]")
    return names


def _wiseft_alpha(value: Any, where: str) -> Any:
    """A row's alpha as written (``0.5`` or WiSE-FT's one-element list ``[0.5]``); None if absent.
    Several alphas or a non-number say nothing about which one the row's figures are for."""
    alpha = value[0] if isinstance(value, list) and len(value) == 1 else value
    if alpha is None:
        return None
    try:
        if isinstance(alpha, bool) or not math.isfinite(float(alpha)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'alpha' {value!r} is not one number; each row holds the figures of one alpha") from None
    return alpha


def read_wiseft(path: Path, source: str | None = None) -> list[Result]:
    """A WiSE-FT ``--results-db`` JSONL: ``"{Dataset}:top1"`` keys (fractions) plus the run's args."""
    path = Path(path)
    source = source or f"wiseft:{path.stem}"
    rows = []
    objs = _read_jsonl(path)
    for line, (obj, base) in enumerate(zip(objs, wiseft_run_names(objs), strict=True), start=1):
        if "ImageNet:top1" not in obj:
            raise ValueError(f"{path}:{line}: WiSE-FT row lacks 'ImageNet:top1'")
        alpha = _wiseft_alpha(obj.get("alpha"), f"{path}:{line}")
        model = f"{base} alpha={alpha}" if alpha is not None else f"{base} #{line}"
        tags = {"clip", "more-data", "wiseft"}
        if alpha is not None and float(alpha) == 0.0:
            tags = {"clip", "clip-zero-shot", "more-data"}
        elif alpha is not None and float(alpha) == 1.0:
            tags = {"clip", "fine-tuned", "more-data"}
        for key, setting in WISEFT_KEYS.items():
            acc = _fraction(obj.get(key), 1, f"{path}:{line}", key)
            if acc is not None:
                rows.append(published_result(source, model, setting, {"top1": acc}, None, WF_PROTOCOL.get(setting), tags,
                                             f"{path}:{line}"))
    return rows


def read_soups(path: Path, source: str | None = None) -> list[Result]:
    """model-soups ``*_results.jsonl``: ``model_name`` plus one fraction per dataset."""
    path = Path(path)
    source = source or f"soups:{path.stem}"
    kind = "soup" if "soup" in path.name else "fine-tuned"
    rows = []
    for line, obj in enumerate(_read_jsonl(path), start=1):
        if "ImageNet" not in obj:
            raise ValueError(f"{path}:{line}: model-soups row lacks 'ImageNet'")
        model = str(obj.get("model_name") or f"{path.stem} #{line}")
        for key, setting in SOUP_KEYS.items():
            acc = _fraction(obj.get(key), 1, f"{path}:{line}", key)
            if acc is not None:
                rows.append(published_result(source, model, setting, {"top1": acc}, None, WF_PROTOCOL.get(setting),
                                             ("clip", kind, "more-data"), f"{path}:{line}"))
    return rows


def read_results_jsonl(path: Path, source: str | None = None) -> list[Result]:
    """The engine's ``results.jsonl`` (``harness.api.Result`` rows), read as written; each row
    records the input it came from (:func:`reports.rows.source_of`).

    An ``objectnet-names`` row comes from a model with a 113-way head, which cannot score
    ImageNet; as open_clip does, it is paired with the ImageNet accuracy of the same weights'
    1000-way head: the model of the same file with the same ``weights_sha256`` and architecture
    and an ImageNet row lends a copy of its ImageNet row to the 113-way model (marked
    ``provenance["id_row_of"]``)."""
    path = Path(path)
    source = source or f"run:{path.parent.name if path.name == 'results.jsonl' else path.stem}"
    results = []
    for line, obj in enumerate(_read_jsonl(path), start=1):
        check_result_row(obj, f"{path}:{line}")
        try:
            res = Result.from_dict(obj)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{line}: not a result row ({exc})") from None
        for metric in dict.fromkeys(("top1", res.main_metric or "top1")):
            if metric not in res.metrics:
                raise ValueError(f"{path}:{line}: result for {res.model!r} on {res.setting!r} has no {metric!r} metric"
                                 + (" (its main metric)" if metric != "top1" else ""))
            _fraction(res.metrics[metric], 1, f"{path}:{line}", f"metrics.{metric}")
        results.append((line, res))
    results = unique_results(results, path)
    owners = names_head_owners(res for _, res in results)
    imagenet = {res.model: res for _, res in results if res.setting == ID_SETTING}
    lent = [_lent(imagenet[owner], model, tags) for model, (owner, tags) in owners.items()]
    return [with_source(res, source) for res in [*(res for _, res in results), *lent]]


def _lent(owner_row: Result, model: str, tags: list[str]) -> Result:
    """The owner's ImageNet row as the names-head model's, with the names model's tags."""
    res = with_model_tags(dataclasses.replace(owner_row, model=model), tags)
    return dataclasses.replace(res, provenance={**res.provenance, "id_row_of": owner_row.model})


def _weights_key(res) -> tuple[str, str] | None:
    info = (res.provenance or {}).get("model") or {}
    sha = info.get("weights_sha256")
    return (str(sha), str(info.get("arch"))) if sha else None


def names_head_owners(results: Iterable) -> dict[str, tuple[str, list[str]]]:
    """Model of an ``objectnet-names`` row -> (the one model with the same weights that has an
    ImageNet row, the names model's tags); models with their own ImageNet row, or no unique
    match, are left alone (and reported as unpaired)."""
    results = list(results)
    with_imagenet: dict[tuple[str, str], set[str]] = {}
    for res in results:
        key = _weights_key(res)
        if res.setting == ID_SETTING and key is not None:
            with_imagenet.setdefault(key, set()).add(res.model)
    own = {m for models in with_imagenet.values() for m in models}
    out = {}
    for res in results:
        key = _weights_key(res)
        if res.setting == "objectnet-names" and res.model not in own and key is not None:
            owners = with_imagenet.get(key, set())
            if len(owners) == 1:
                tags = list(((res.provenance or {}).get("model") or {}).get("tags") or ())
                out[res.model] = (next(iter(owners)), tags)
    return out


#: Registered shifts whose data root is the dataset itself: their rows are named after it.
USER_SHIFTS = ("folder", "wds")


def user_shift_names(folder: Path) -> dict[str, str]:
    """``folder`` -> ``folder:<dataset folder name>`` (and ``wds``) from the run's config, as the
    shift's completed spec names it, so two user datasets never share a setting."""
    from harness.layout import RunLayout

    path = RunLayout(folder).config_path
    try:
        root = (json.loads(path.read_text()).get("config") or {}).get("data_root") if path.is_file() else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return {s: f"{s}:{Path(root).name}" for s in USER_SHIFTS} if root else {}


def user_setting(res: Result, names: Mapping[str, str]) -> str:
    """A ``folder`` or ``wds`` row's setting named after the dataset it was scored on: the data
    root its cell records (``provenance.cell.data_root``, resolved when it ran), else the run's
    last one (:func:`user_shift_names`). A run directory reused with another ``--data-root``
    holds rows of two datasets; each keeps its own name."""
    if res.setting not in USER_SHIFTS:
        return res.setting
    root = ((res.provenance or {}).get("cell") or {}).get("data_root")
    if isinstance(root, str) and Path(root).name:
        return f"{res.setting}:{Path(root).name}"
    return names.get(res.setting, res.setting)


def read_run_dir(folder: Path) -> list[Result]:
    """A run directory's ``results.jsonl``; a ``folder`` or ``wds`` setting takes its dataset's
    name (:func:`user_setting`)."""
    path = Path(folder) / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no results.jsonl; is this a run directory (shiftbench run --run-dir)?")
    rows = read_results_jsonl(path, f"run:{Path(folder).name}")
    names = user_shift_names(folder)
    return [dataclasses.replace(r, setting=user_setting(r, names)) for r in rows]


READERS: dict[str, Callable[[Path], list[Result]]] = {
    "timm": lambda p: read_timm_dir(p) if Path(p).is_dir() else read_timm_csv(p),
    "open_clip": read_open_clip,
    "imagenet-testbed": read_testbed,
    "wiseft": read_wiseft,
    "soups": read_soups,
    "results": lambda p: read_run_dir(p) if Path(p).is_dir() else read_results_jsonl(p),
    "shiftbench": read_table,
}


#: Formats that read a folder: a timm ``results/`` folder, a run directory.
FOLDER_FORMATS = ("timm", "results")


def detect_format(path: Path) -> str:
    """Guess a file's format from its name and first line/row."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "results.jsonl").exists():
            return "results"
        if any(path.glob("results-*.csv")):
            return "timm"
        raise ValueError(f"{path}: a folder without results.jsonl or timm results-*.csv files")
    name = path.name
    if name.endswith(".csv.gz"):
        return "shiftbench"
    if name.endswith(".csv"):
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header[:3]) == TIMM_COLUMNS:
            return "timm"
        if header[:2] == ["name", "pretrained"]:
            return "open_clip"
        if header[:1] == ["model"] and "val" in header:
            return "imagenet-testbed"
        if tuple(header[:7]) == ("source", "model", "setting", "accuracy", "n", "protocol", "tags"):
            return "shiftbench"
    elif name.endswith((".jsonl", ".json")):
        first = _read_jsonl(path)[0]
        if "setting" in first and "metrics" in first:
            return "results"
        if "model_name" in first:
            return "soups"
        if any(":" in k for k in first):
            return "wiseft"
    raise ValueError(f"{path}: unknown results format; pass --format, one of {', '.join(FORMATS)}")


def load(path: Path, fmt: str | None = None) -> list[Result]:
    """Read ``path`` in ``fmt`` (auto-detected when None)."""
    try:
        fmt = fmt or detect_format(path)
        if fmt not in READERS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if Path(path).is_dir() and fmt not in FOLDER_FORMATS:
            raise ValueError(f"{path}: a folder, and --format {fmt} reads a file; give the file, or a "
                             f"{' or '.join(FOLDER_FORMATS)} folder")
        return READERS[fmt](Path(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a results file?") from None
