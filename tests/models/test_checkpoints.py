import pickle

import pytest
import torch

from models.checkpoints import LazyStateDict, file_sha256, load_state_dict, save_safetensors


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(2, 3, generator=g), "a.bias": torch.randn(2, generator=g)}


def _equal(x, y):
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_state_dict_formats_round_trip(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pt")
    save_safetensors(sd, tmp_path / "w.safetensors")
    # safetensors detected by content, whatever the suffix
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.safetensors").read_bytes())
    for name in ("plain.pt", "wrapped.pt", "dp.pt", "w.safetensors", "w.bin"):
        assert _equal(load_state_dict(tmp_path / name), sd), name


def test_openai_state_dict_ints_are_dropped(tmp_path):
    sd = {**_sd(), "input_resolution": torch.tensor(224), "context_length": torch.tensor(77), "vocab_size": 49408}
    torch.save(sd, tmp_path / "openai.pt")
    assert set(load_state_dict(tmp_path / "openai.pt")) == {"a.weight", "a.bias"}


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Boom()}, path)
    with pytest.raises(ValueError, match="refusing to run code") as info:
        load_state_dict(path)
    assert "pwned" not in capsys.readouterr().out
    assert "weights_only=False" in str(info.value) and ".safetensors" in str(info.value)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="refusing to run code"):
        load_state_dict(raw)
    assert "pwned" not in capsys.readouterr().out


def test_pickled_module_is_refused_with_conversion(tmp_path):
    path = tmp_path / "wiseft_model.pt"
    torch.save(Tiny(), path)  # what WiSE-FT's torch_save produces
    with pytest.raises(ValueError, match="pickled Python objects") as info:
        load_state_dict(path)
    assert str(path) in str(info.value) and "state_dict()" in str(info.value)


class Nested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = Tiny(), Tiny()  # two instances of one class: mangled TorchScript names
        self.seq = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        self.register_buffer("stat", torch.arange(3.0))
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))
        self.mask = torch.ones(2)  # a plain tensor attribute: not part of the state dict

    def forward(self, x):
        return self.seq(self.a.fc(x) + self.b.fc(x)) * self.logit_scale * self.mask


def test_torchscript_archive_is_read_as_data_exactly(tmp_path):
    module = Nested().half()  # OpenAI's released archives hold fp16 weights
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.trace(module.float(), torch.zeros(1, 3)).half().save(str(path))
    expected = torch.jit.load(str(path)).state_dict()
    got = load_state_dict(path)
    assert sorted(got) == sorted(expected)
    assert all(got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]) for k in expected)


def test_torchscript_archive_with_foreign_globals_is_refused(tmp_path, capsys):
    import zipfile

    src = tmp_path / "ok.pt"
    torch.jit.trace(Tiny(), torch.zeros(1, 3)).save(str(src))
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Boom(), protocol=2)
            zout.writestr(item, data)
    with pytest.raises(ValueError, match=r"refers to __builtin__\.print.*refusing") as info:
        load_state_dict(evil)
    assert "torch.jit.load" in str(info.value)  # the conversion for a trusted environment
    assert "pwned" not in capsys.readouterr().out


def test_nan_weights_and_non_tensors_and_garbage_are_clear_errors(tmp_path):
    sd = _sd()
    sd["a.bias"][0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"nan\.pt: non-finite .*a\.bias"):
        load_state_dict(tmp_path / "nan.pt")
    torch.save({"a": torch.zeros(1), "lr": 0.1}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="entry 'lr' is a float"):
        load_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_state_dict(tmp_path / "missing.pt")


def test_lazy_view_matches_eager_load_and_hash_is_stable(tmp_path):
    sd = _sd(1)
    save_safetensors(sd, tmp_path / "a.safetensors")
    torch.save(sd, tmp_path / "a.pt")
    for name in ("a.safetensors", "a.pt"):
        lazy = LazyStateDict(tmp_path / name)
        assert sorted(lazy) == sorted(sd) and lazy.shape("a.weight") == (2, 3)
        assert all(torch.equal(lazy[k], sd[k]) for k in sd)
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "a.pt")
    assert len(file_sha256(tmp_path / "a.pt")) == 64


def test_a_files_hash_is_remembered_until_the_file_changes(tmp_path):
    import os

    from models.checkpoints import file_sha256

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 10)
    first = file_sha256(path)
    assert file_sha256(path) == first
    path.write_bytes(b"b" * 11)  # another size: hashed again
    assert file_sha256(path) != first
    st = path.stat()
    path.write_bytes(b"c" * 11)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # same size, another mtime
    assert file_sha256(path) == __import__("hashlib").sha256(b"c" * 11).hexdigest()


def test_a_failed_safetensors_write_leaves_no_folder_it_made(tmp_path):
    """safetensors refuses tensors that share memory: nothing of the write is left."""
    shared = torch.zeros(4)
    with pytest.raises(RuntimeError, match="share memory"):
        save_safetensors({"a": shared, "b": shared}, tmp_path / "new" / "deep" / "merged.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_weights_file_is_checked_for_nan_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """The checked build and the real build after it read one file: its values are checked once."""
    import models.checkpoints as checkpoints

    path = tmp_path / "w.safetensors"
    save_safetensors({"w": torch.ones(3)}, path)
    checked, check = [], checkpoints.check_finite_weights
    monkeypatch.setattr(checkpoints, "check_finite_weights", lambda state, source: (checked.append(source), check(state, source)))
    load_state_dict(path)
    load_state_dict(path)
    assert len(checked) == 1
    save_safetensors({"w": torch.tensor([1.0, float("nan"), 1.0])}, path)  # rewritten: checked again
    with pytest.raises(ValueError, match="non-finite"):
        load_state_dict(path)
    assert len(checked) == 2
