"""Reading and writing weights files without ever running code from them.

Checkpoints from others are untrusted: safetensors are read as raw tensors, everything else
with ``torch.load(weights_only=True)`` (a restricted unpickler that builds tensors and plain
containers only). TorchScript archives (OpenAI's released CLIP ``.pt``) are read as data by
``models.torchscript``, never run. Pickled modules (WiSE-FT's ``torch.save(model)``) are refused
with the one-off conversion to run in a trusted environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from harness.files import file_sha256  # noqa: F401 - re-exported: the models' weights hash
from models.torchscript import is_torchscript_archive, read_torchscript_weights

SAFETENSORS_SUFFIXES = (".safetensors",)
# Entries OpenAI's state dicts carry next to the tensors (ints, not weights).
OPENAI_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")

CONVERT_PICKLED_MODULE = (
    "in an environment where you trust the file and have the code that saved it, run: "
    "python -c \"import torch, safetensors.torch as st; m = torch.load('{path}', weights_only=False); "
    "st.save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, '{stem}.safetensors')\" "
    "and pass the .safetensors file"
)
CONVERT_TORCHSCRIPT = (
    "in an environment where you trust the file, run: "
    "python -c \"import torch, safetensors.torch as st; m = torch.jit.load('{path}', map_location='cpu'); "
    "sd = {{k: v.float().contiguous() for k, v in m.state_dict().items() if k not in ('input_resolution', 'context_length', 'vocab_size')}}; "
    "st.save_file(sd, '{stem}.safetensors')\" and pass the .safetensors file (it loads into the open_clip architecture of the same name)"
)


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Hash of a state dict's names, dtypes, shapes and values (for weights built in memory)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_safetensors(path: Path) -> bool:
    if path.suffix in SAFETENSORS_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # 8-byte little-endian header length, then a JSON object.
    return len(head) == 9 and head[8:9] == b"{"


def _starts_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x80"  # pickle PROTO opcode


def _refusal(path: Path, template: str, what: str) -> ValueError:
    return ValueError(f"{path}: {what}; refusing to run code from an untrusted file. To use it, "
                      + template.format(path=path, stem=path.with_suffix("")))


def load_state_dict(path: str | os.PathLike, check_finite: bool = True, mmap: bool = False,
                    wrappers: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """A checkpoint file -> ``{name: tensor}`` (safetensors or a torch state dict, never a pickle).

    Unwraps ``{"state_dict": ...}`` (or the first of ``wrappers`` present) and DataParallel ``module.`` prefixes, drops OpenAI's
    non-weight entries; rejects non-tensor values and (unless ``check_finite`` is False)
    NaN/inf weights. ``mmap`` maps ``torch.save`` zip files lazily (safetensors always are).
    A file found finite is not checked again in the process while it is unchanged: the real
    build after a checked one (``harness.api.checking_build``) reads it without a second pass.
    """
    from harness.api import is_checking_build
    from harness.files import file_version

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    mmap = mmap or is_checking_build()  # a checked build reads every tensor once, holding none
    finite = (file_version(path), wrappers)
    state = _read_state_dict(path, mmap, check_finite and finite not in _FINITE, wrappers)
    if check_finite:
        _FINITE.add(finite)
    return state


_FINITE: set[tuple[tuple[str, int, int, int, int], tuple[str, ...]]] = set()  # files (and wrappers) found finite


def _read_state_dict(path: Path, mmap: bool, check_finite: bool, wrappers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    else:
        if is_torchscript_archive(path):
            try:
                raw = read_torchscript_weights(path)
            except (ValueError, pickle.UnpicklingError, KeyError, zipfile.BadZipFile) as exc:
                raise _refusal(path, CONVERT_TORCHSCRIPT, f"is a TorchScript archive that the weights reader "
                                                          f"cannot read as data ({exc})") from None
            return clean_state_dict(raw, path, check_finite=check_finite, wrappers=wrappers)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
        except pickle.UnpicklingError as exc:
            # the restricted unpickler met a class/function, or a raw (non-torch) pickle stream
            if "global" not in str(exc).lower() and not _starts_like_pickle(path):
                raise ValueError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0]}); "
                                 "expected a .safetensors file or a torch.save'd state dict") from exc
            raise _refusal(path, CONVERT_PICKLED_MODULE,
                           "contains pickled Python objects (e.g. a whole module saved with torch.save(model))") from exc
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             "expected a .safetensors file or a torch.save'd state dict") from exc
    return clean_state_dict(raw, path, check_finite=check_finite, wrappers=wrappers)


def clean_state_dict(raw: object, source: str | os.PathLike = "<state dict>", check_finite: bool = True,
                     wrappers: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """Validate and normalise a loaded checkpoint object into a flat ``{name: tensor}`` dict."""
    if isinstance(raw, Mapping):
        for key in wrappers:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: expected a non-empty mapping of parameter names to tensors, got {type(raw).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key in OPENAI_NON_WEIGHT_KEYS and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        if isinstance(key, str) and key.rsplit(".", 1)[-1] == "attn_mask":
            continue  # causal masks (-inf above the diagonal) are rebuilt by the model, not weights
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                             "expected a flat state dict (name -> tensor)")
        out[key] = value
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    if check_finite:
        check_finite_weights(out, source)
    return out


def check_finite_weights(state: Mapping[str, torch.Tensor], source: str | os.PathLike = "<state dict>") -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"{source}: non-finite (NaN/inf) values in {', '.join(bad[:3])}{more}; the checkpoint is corrupt or diverged")


@contextlib.contextmanager
def parameters_uninitialised() -> Iterator[None]:
    """Modules built inside skip the random initialisation of their parameters: ``uniform_`` and
    ``normal_`` on an ``nn.Parameter`` (what ``nn.init`` and the layers' ``reset_parameters``
    call) leave it as allocated. For a module whose every parameter a checkpoint overwrites
    next (``load_into``: strict, so none is left out), where the random numbers were most of the
    build: ViT-B-32 0.9 s -> 0.04 s, ViT-L-14 4.2 s -> 0.1 s on a 2-core AVX512 CPU. Buffers, and
    tensors that are not parameters, are initialised as usual (a checkpoint need not hold them:
    a text tower's causal mask is not in its state dict). Process-wide while open: use it only
    around building a module, in the thread that builds it. In a checked build the module is
    built on the ``meta`` device (``on_meta_when_checking``)."""
    originals = {name: getattr(torch.Tensor, name) for name in ("uniform_", "normal_")}

    def skipping(original):
        def method(self, *args, **kwargs):
            if isinstance(self, torch.nn.Parameter):
                return self
            return original(self, *args, **kwargs)

        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, skipping(original))
    try:
        with on_meta_when_checking():
            yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def on_meta_when_checking() -> contextlib.AbstractContextManager:
    """Modules built inside a checked build (``harness.api.checking_build``) live on the
    ``meta`` device: names and shapes, which is all ``load_into`` checks, without memory or
    values. A real build is untouched."""
    from harness.api import is_checking_build

    return torch.device("meta") if is_checking_build() else contextlib.nullcontext()


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike,
              target: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming the file and the architecture. Into
    a module on the ``meta`` device (a checked build) it checks names and shapes only."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
            module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ValueError(f"{source}: does not fit {target} ({detail}); "
                         "check the architecture name matches the checkpoint (--model NAME:ARCH)") from None


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> str:
    """Write atomically (temp file, then rename); returns the file's sha256. A failed write
    leaves neither the temp file nor the folders made for it.

    The temp name is unique per writer: torchrun ranks and Ray tasks saving the same cached
    head at once each rename their own complete file, never one another's."""
    from safetensors.torch import save_file

    from harness.files import missing_folders, remove_empty_folders

    path = Path(path)
    made = missing_folders(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise
    return file_sha256(path)


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Read-only view of a checkpoint whose tensors are read one at a time.

    Safetensors are read per tensor with ``safe_open``; torch zip checkpoints are
    memory-mapped. Streaming merges iterate keys so at most one tensor per file is resident.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.path}")
        self._safe = is_safetensors(self.path)
        if self._safe:
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(self.path), framework="pt") as fh:
                    self._keys = list(fh.keys())
            except (SafetensorError, OSError, ValueError) as exc:
                raise ValueError(f"{self.path}: not a readable safetensors file ({exc})") from exc
            self._handle = None
            self._eager: dict[str, torch.Tensor] | None = None
        else:
            self._eager = load_state_dict(self.path, check_finite=False, mmap=True)
            self._keys = list(self._eager)

    def _open(self):
        from safetensors import safe_open

        if self._handle is None:
            self._handle = safe_open(str(self.path), framework="pt")
        return self._handle

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._eager is not None:
            return self._eager[key]
        if key not in self._keys:
            raise KeyError(key)
        return self._open().get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._eager is not None:
            return tuple(self._eager[key].shape)
        return tuple(self._open().get_slice(key).get_shape())

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
