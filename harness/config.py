"""The frozen run configuration: defaults < config file < command line.

One ``RunConfig`` is resolved per invocation and never mutated; each cell's identity
(``harness.engine.identity``) takes only the settings that change its numbers, so adding a
model or a shift to a run directory redoes nothing, while changing the precision or the
split does.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.strict_parse import no_duplicates

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-weights")  # see harness.engine.numerics
EXECUTORS = ("local", "ray")
DECODERS = ("auto", "pil", "torchvision")  # see harness.engine.gpu_decode

# Settings that change predictions; a run directory refuses a config that differs in these.
# A model's own options are part of its cell hash instead, so one directory holds models
# built with different weights.
IDENTITY_FIELDS = ("split", "precision", "seed")

# Allowed ranges of integer settings. The fp32 agreement check of reduced precision cannot be
# switched off by a zero or negative sample; torch seeds are 64-bit, numpy's 32-bit.
INT_RANGES = {
    "batch_size": (1, 1 << 20),
    "workers": (0, 512),
    "agreement_sample": (1, 1 << 20),
    "seed": (0, (1 << 32) - 1),
}

# The option that names a model in results instead of its NAME:ARG; never passed to factories.
LABEL_OPTION = "label"


def parse_model_entry(entry: str) -> tuple[str, dict[str, str]]:
    """``"NAME:ARG key=value ..."`` -> ``("NAME:ARG", {key: value})``.

    A model entry carries that model's own options, so ``--model a --model-arg weights=x
    --model b --model-arg weights=y`` and a config file's ``models = ["a weights=x", ...]``
    say the same thing. Values with spaces are shell-quoted.
    """
    try:
        spec, *args = shlex.split(entry)
    except ValueError as exc:
        raise ValueError(f"model {entry!r}: {exc}") from None
    except TypeError:
        raise ValueError(f"model {entry!r} must be a string") from None
    if not spec or "=" in spec:
        raise ValueError(f"model {entry!r} must start with NAME:ARG, e.g. clip:ViT-B-32 weights=/ckpt/b32.pt")
    return spec, _options(args, f"model {spec!r}")


def model_entry(spec: str, args: list[str] | tuple[str, ...]) -> str:
    """The entry ``parse_model_entry`` reads back: ``NAME:ARG`` followed by its options."""
    return shlex.join([spec, *args])


def _options(args: list[str] | tuple[str, ...], where: str) -> dict[str, str]:
    for arg in args:
        if "=" not in arg or arg.startswith("="):
            raise ValueError(f"{where}: option {arg!r} must look like key=value")
    return dict(arg.split("=", 1) for arg in args)


def default_cache_dir() -> str:
    env = os.environ.get("SHIFTBENCH_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "shiftbench" / "images")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``cache_dir=""`` turns the decoded-image cache off."""

    models: tuple[str, ...] = ()
    model_args: tuple[str, ...] = ()
    shifts: tuple[str, ...] = ()
    data_root: str = ""
    run_dir: str = ""
    split: str | None = None
    precision: str = "fp32"
    device: str = "auto"
    batch_size: int = 64
    workers: int = 2
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
    agreement_sample: int = 64
    min_agreement: float = 0.95
    seed: int = 0
    executor: str = "local"
    json: bool = False
    progress: bool = True
    allow_incomplete: bool = False
    decoder: str = "auto"
    skip_bad_images: bool = False
    #: The ID setting a user (``folder``/``wds``) shift's rows pair with, e.g. ``imagenet``:
    #: metadata of the rows, never of the predictions, so no cell's identity holds it.
    id_shift: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement is a fraction in [0, 1], got {self.min_agreement}")
        if self.id_shift is not None:
            check_id_shift_name(self.id_shift)
        _options(self.model_args, "--model-arg")
        for entry in self.models:
            parse_model_entry(entry)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings a run directory must agree on."""
        d = self.to_dict()
        return {k: d[k] for k in IDENTITY_FIELDS}

    def config_hash(self) -> str:
        payload = json.dumps({**self.identity(), "models": self.models, "shifts": self.shifts}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def model_options(self) -> dict[str, str]:
        """The options every model gets (``--model-arg`` before any ``--model``)."""
        return _options(self.model_args, "--model-arg")

    def model_specs(self) -> list[tuple[str, dict[str, str]]]:
        """Each model's ``NAME:ARG`` and options: the shared ones, overridden by its own."""
        shared = self.model_options()
        out = []
        for entry in self.models:
            spec, own = parse_model_entry(entry)
            out.append((spec, {**shared, **own}))
        return out

    def describe(self) -> str:
        """Printed at the start of a run: every setting, one per line."""
        width = max(len(f.name) for f in fields(self))
        lines = [f"  {name:<{width}}  {value}" for name, value in self.to_dict().items()]
        return "shiftbench run configuration (hash " + self.config_hash() + "):\n" + "\n".join(lines)


def check_id_shift_name(name: str) -> None:
    """The form of an ``--id-shift``: one setting name (the registry checks that it exists)."""
    if not name or name != name.strip() or any(c.isspace() for c in name):
        raise ValueError(f"--id-shift {name!r}: expected one ID setting name, e.g. --id-shift imagenet")
    if "=" in name:
        raise ValueError(
            f"--id-shift {name!r}: `shiftbench run` takes the ID setting alone (e.g. --id-shift imagenet); "
            "SETTING=ID is the form of `shiftbench report --id-shift`"
        )
    if "@" in name:
        raise ValueError(
            f"--id-shift {name!r}: name the ID setting itself (e.g. imagenet), not a same-class view; "
            "a view is formed from a shift's class map"
        )


_TUPLE_FIELDS = {f.name for f in fields(RunConfig) if str(f.type).startswith("tuple")}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Bring a config-file or CLI value to the field's type, naming the source on error."""
    ftype = str(RunConfig.__dataclass_fields__[name].type)
    if name in _TUPLE_FIELDS:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{source}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    try:
        if ftype == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if ftype == "float":
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        if ftype == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{source}: {name} must be {ftype}, got {value!r}") from None
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{source}: {name} must be a string, got {value!r}")
    return value



def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (``[run]`` table or top level) or JSON file -> validated field values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            raw = json.loads(text, object_pairs_hook=no_duplicates(str(path), "setting {key!r} is given twice; keep one"))
        else:
            raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})") from None
    if isinstance(raw, dict) and isinstance(raw.get("run"), dict):
        raw = raw["run"]
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a table of settings")
    known = [f.name for f in fields(RunConfig)]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path}: unknown setting {key!r}{hint}; known: {', '.join(known)}")
        out[name] = _coerce(name, value, str(path))
    return out


def resolve(cli: Mapping[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """defaults < config file < CLI; CLI values of None mean "not given"."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(read_config_file(config_file))
    for name, value in cli.items():
        if value is None:
            continue
        values[name] = _coerce(name, value, "command line")
    return RunConfig(**values)


def from_dict(d: Mapping[str, Any], source: str) -> RunConfig:
    """Rebuild a config stored in a run directory's ``config.json``."""
    known = {f.name for f in fields(RunConfig)}
    try:
        return RunConfig(**{k: _coerce(k, v, source) for k, v in d.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"{source}: not a shiftbench run configuration ({exc})") from None
