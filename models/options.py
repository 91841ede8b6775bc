"""Typed access to ``--model-arg key=value`` strings, with errors that name the option."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
# Settings the engine alone decides for every model of a run; a model option would fight it.
ENGINE_SETTINGS = {"precision": "--precision", "device": "--device"}


class Options:
    """Reads each option at most once; ``done()`` rejects the ones nobody asked for."""

    def __init__(self, factory: str, options: Mapping[str, object], documented: tuple[str, ...]) -> None:
        for name, flag in ENGINE_SETTINGS.items():
            if name in options:
                raise ValueError(
                    f"model {factory}: option {name}={options[name]!s} is no longer a model option; the engine "
                    f"sets it for every model: pass {flag} {options[name]!s} to the command (or {name} = "
                    f"\"{options[name]!s}\" in the config file) and drop --model-arg {name}=..."
                )
        self.factory = factory
        self.raw = {k: str(v) for k, v in options.items()}
        self.documented = documented
        self.used: set[str] = set()

    def _err(self, name: str, msg: str) -> ValueError:
        return ValueError(f"model {self.factory}: option {name}={self.raw.get(name, '')!r}: {msg}")

    def get(self, name: str, default: str | None = None) -> str | None:
        self.used.add(name)
        value = self.raw.get(name)
        return default if value is None or value == "" else value

    def given(self, *names: str) -> list[str]:
        """Which of ``names`` were given a value (not counted as used: a caller that refuses them
        says why instead of calling them unknown)."""
        return [name for name in names if self.raw.get(name)]

    def require(self, name: str, what: str) -> str:
        value = self.get(name)
        if value is None:
            raise ValueError(f"model {self.factory}: missing option {name}=... ({what}); pass --model-arg {name}=VALUE")
        return value

    def path(self, name: str, what: str, required: bool = True) -> Path | None:
        value = self.require(name, what) if required else self.get(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model {self.factory}: option {name}: {path} does not exist ({what})")
        return path

    def float(self, name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        value = self.get(name)
        if value is None:
            return default
        try:
            out = float(value)
        except ValueError:
            raise self._err(name, "expected a number") from None
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            raise self._err(name, f"expected a number in [{lo}, {hi}]")
        return out

    def int(self, name: str, default: int, lo: int = 1) -> int:
        value = self.get(name)
        if value is None:
            return default
        try:
            out = int(value)
        except ValueError:
            raise self._err(name, "expected an integer") from None
        if out < lo:
            raise self._err(name, f"expected an integer >= {lo}")
        return out

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if value.lower() in TRUE:
            return True
        if value.lower() in FALSE:
            return False
        raise self._err(name, "expected true or false")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, default)
        if value not in choices:
            raise self._err(name, f"expected one of {', '.join(choices)}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, self.documented, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(f"model {self.factory}: unknown option {name!r}.{hint} "
                             f"Options: {', '.join(self.documented)}")
