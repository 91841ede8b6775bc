"""One lazy registry mechanism, fed by entry points.

Built-in shifts and models are declared in ``pyproject.toml`` under the groups
``shiftbench.shifts`` and ``shiftbench.models``, exactly as a third-party package would
declare its own; nothing is registered by import side effect.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to ``module:attr`` targets, imported on first use."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._targets: dict[str, str | T] = {}
        self._loaded: dict[str, T] = {}
        self._scanned = group is None

    def add(self, name: str, target: str | T) -> None:
        """Register ``name``; re-registering the same target is a no-op, a different one an error."""
        prior = self._targets.get(name)
        if prior is not None and prior is not target and prior != target:
            raise ValueError(f"{self.kind} {name!r} is registered twice: {prior} and {target}")
        self._targets[name] = target

    @contextmanager
    def scoped(self, targets: Mapping[str, str | T]) -> Iterator[None]:
        """Register ``targets`` for the duration of a ``with`` block, then restore the registry.

        For tests and embedding: registrations made this way never leak into other users."""
        self._scan()
        saved_targets, saved_loaded = dict(self._targets), dict(self._loaded)
        try:
            for name, target in targets.items():
                self.add(name, target)
            yield
        finally:
            self._targets, self._loaded = saved_targets, saved_loaded

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            self.add(ep.name, ep.value)

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        self._scan()
        return name in self._targets

    def get(self, name: str) -> T:
        self._scan()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._targets:
            raise KeyError(unknown_name_message(self.kind, name, self.names()))
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            obj: Any = import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            target = obj
        self._loaded[name] = target
        return target

    def origin(self, name: str) -> str:
        self._scan()
        target = self._targets.get(name)
        return target if isinstance(target, str) else repr(target)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """"Unknown shift 'imagenet_r'. Did you mean: imagenet-r?" plus what exists."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
    return f"Unknown {kind} {name!r}.{hint} Known {kind}s: {listing or '(none registered)'}."


shifts: Registry[Callable[..., Any]] = Registry("shift", "shiftbench.shifts")
models: Registry[Callable[..., Any]] = Registry("model", "shiftbench.models")


def get_shift(name: str) -> Any:
    """The registered shift ``name``, instantiated; unknown names raise ValueError with hints.

    ``<shift>:<split>`` (``iwildcam:id_test``) is one split of a registered shift as its own
    shift, for shifts whose ID reference is another split of themselves."""
    from harness.api import SPLIT_SEPARATOR, SplitShift

    if name not in shifts and SPLIT_SEPARATOR in name:
        base, _, split = name.rpartition(SPLIT_SEPARATOR)
        if base in shifts:
            return SplitShift(get_shift(base), split, name)
    try:
        factory = shifts.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return factory()


def get_model_factory(name: str) -> Callable[..., Any]:
    try:
        return models.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
