"""Read the weights of a TorchScript archive (OpenAI's released CLIP ``.pt``) without running it.

``torch.jit.load`` compiles and runs code shipped in the archive (``__setstate__`` methods run
at load time), and ``torch.load(weights_only=True)`` refuses TorchScript archives. We read the
archive as data instead: ``data.pkl`` goes through a restricted unpickler that can only build
placeholder module objects, ordered dicts and tensors from the archive's own storage files
(anything else is refused), and each module's ``__parameters__`` / ``__buffers__`` lists are
read as text from its class definition, giving exactly the names of ``module.state_dict()``.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_LIST = re.compile(r'"([^"]*)"')


class _ScriptObject:
    """Placeholder for a TorchScript module: remembers its class and attribute dict."""

    qualname = ""

    def __setstate__(self, state):
        self.state = state


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def is_torchscript_archive(path: str | Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in zf.namelist())


def archive_uses_quick_gelu(path: str | Path) -> bool:
    """Whether the archive's modules include a ``QuickGELU`` class, as OpenAI's CLIP releases do.

    Read from the class references in ``data.pkl`` (text, nothing is unpickled)."""
    with zipfile.ZipFile(path) as zf:
        pkl = next((n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
        return pkl is not None and re.search(rb"\bQuickGELU\b", zf.read(pkl)) is not None


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, zf: zipfile.ZipFile, root: str, source: Path) -> None:
        super().__init__(fh)
        self.zf, self.root, self.source = zf, root, source
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qual = f"{module}.{name}"
            if qual not in self.classes:
                self.classes[qual] = type(name, (_ScriptObject,), {"qualname": qual})
            return self.classes[qual]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"{self.source}: TorchScript archive refers to {module}.{name}, which a "
                                     "weights reader never needs; refusing it")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"{self.source}: unexpected storage reference {pid!r}")
        _, storage_type, key, _location, numel = pid
        data = bytearray(self.zf.read(f"{self.root}/data/{key}"))
        flat = torch.frombuffer(data, dtype=storage_type.dtype) if data else torch.empty(0, dtype=storage_type.dtype)
        if flat.numel() != numel:
            raise pickle.UnpicklingError(f"{self.source}: storage {key} holds {flat.numel()} values, expected {numel}")
        return torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=storage_type.dtype, _internal=True)


def _declared(zf: zipfile.ZipFile, root: str, qualname: str, cache: dict) -> tuple[set[str], set[str]]:
    """(``__parameters__``, ``__buffers__``) of a class, read from its source text (never run)."""
    if qualname in cache:
        return cache[qualname]
    module, _, name = qualname.rpartition(".")
    path = f"{root}/code/{module.replace('.', '/')}.py"
    try:
        text = zf.read(path).decode("utf-8")
    except KeyError:
        raise ValueError(f"TorchScript archive has no code for {qualname} ({path})") from None
    match = re.search(rf"^class {re.escape(name)}\(Module\):\n((?:  .*\n)*)", text, re.M)
    if match is None:
        raise ValueError(f"TorchScript archive: class {qualname} not found in {path}")
    body = match.group(1)
    found = {}
    for field in ("__parameters__", "__buffers__"):
        line = re.search(rf"^  {field} = \[(.*)\]$", body, re.M)
        found[field] = set(_LIST.findall(line.group(1))) if line else set()
    cache[qualname] = (found["__parameters__"], found["__buffers__"])
    return cache[qualname]


def read_torchscript_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The archive's ``state_dict()`` (parameters and buffers, dotted names) as plain tensors."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        roots = [n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise ValueError(f"{path}: not a TorchScript archive with one data.pkl")
        root = roots[0]
        with zf.open(f"{root}/data.pkl") as fh:
            obj = _Unpickler(fh, zf, root, path).load()
        out: dict[str, torch.Tensor] = {}
        cache: dict = {}

        def walk(node, prefix: str) -> None:
            if not isinstance(node, _ScriptObject) or not isinstance(getattr(node, "state", None), dict):
                raise ValueError(f"{path}: unexpected object layout under {prefix or 'the root module'}")
            params, buffers = _declared(zf, root, node.qualname, cache)
            for key, value in node.state.items():
                if isinstance(value, torch.Tensor) and (key in params or key in buffers):
                    out[prefix + key] = value
                elif isinstance(value, _ScriptObject):
                    walk(value, f"{prefix}{key}.")

        walk(obj, "")
    if not out:
        raise ValueError(f"{path}: TorchScript archive holds no parameters")
    return out
