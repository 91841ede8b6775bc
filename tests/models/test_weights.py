"""``shiftbench fetch-weights`` against a real HTTP server on 127.0.0.1: an OpenAI-style archive
verified by the sha256 in its URL, and a Hugging Face file through huggingface_hub's own download
and cache (the server answers as the Hub does: ETag = the LFS file's sha256, X-Repo-Commit).
The weights then load with ``pretrained=TAG`` and no network. The tiny architecture's pretrained
table entry points at the local server; everything else is the real path."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
from pathlib import Path

import pytest
import torch

from harness.cli import main

_spec = importlib.util.spec_from_file_location("local_http", Path(__file__).parents[1] / "shifts" / "local_http.py")
local_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_http)
loopback_only, server = local_http.loopback_only, local_http.server  # fixtures: every test is held to 127.0.0.1

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)



def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def pretrained_entry(monkeypatch, arch: str, tag: str, **cfg) -> None:
    import open_clip.pretrained as p

    table = dict(p._PRETRAINED.get(arch, {}))
    table[tag] = {"mean": MEAN, "std": STD, "url": "", "hf_hub": "", **cfg}
    monkeypatch.setitem(p._PRETRAINED, arch, table)


@pytest.fixture
def head_files(tmp_path):
    names, templates = tmp_path / "names.txt", tmp_path / "templates.txt"
    names.write_text("cat\ndog\n")
    templates.write_text("a photo of a {}.\n")
    return names, templates


def test_openai_archive_is_verified_by_the_sha256_in_its_url(tmp_path, server, monkeypatch, tiny_arch, tiny_clip_state, head_files):
    from models.clip import clip

    monkeypatch.setenv("SHIFTBENCH_WEIGHTS", str(tmp_path / "weights"))
    buf = io.BytesIO()
    torch.save(tiny_clip_state, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    pretrained_entry(monkeypatch, tiny_arch, "openai", url=f"https://openaipublic.azureedge.net/clip/models/{sha}/{tiny_arch}.pt")
    # a damaged copy on the mirror: refused, both digests named, nothing stored
    server.serve(f"/m/{tiny_arch}.pt", data[:-1] + bytes([data[-1] ^ 1]))
    status, _, err = cli("fetch-weights", f"clip:{tiny_arch}@openai", "--mirror", server.base + "/m", "--no-progress")
    assert status == 2 and sha in err and "does not match" in err
    assert not (tmp_path / "weights").exists()  # no file, no aside copy, no folder made for them
    with pytest.raises(FileNotFoundError, match="fetch-weights"):
        clip(tiny_arch, pretrained="openai", classnames=str(head_files[0]), templates=str(head_files[1]), label_space="pets-2")
    server.serve(f"/m/{tiny_arch}.pt", data)
    status, out, err = cli("fetch-weights", f"clip:{tiny_arch}@openai", "--mirror", server.base + "/m", "--no-progress")
    assert status == 0, err
    stored = tmp_path / "weights" / "openai" / sha / f"{tiny_arch}.pt"
    assert stored.read_bytes() == data
    assert f"--model clip:{tiny_arch} --model-arg pretrained=openai" in out
    model = clip(tiny_arch, pretrained="openai", classnames=str(head_files[0]), templates=str(head_files[1]), label_space="pets-2")
    assert model.describe()["weights_sha256"] == sha
    before = len(server.requests)
    status, out, _ = cli("fetch-weights", f"clip:{tiny_arch}@openai", "--mirror", server.base + "/m", "--no-progress")
    assert status == 0 and "already fetched" in out and len(server.requests) == before


def test_hugging_face_weights_go_through_its_cache_and_load_offline(tmp_path, server, monkeypatch, tiny_arch, tiny_clip_state, head_files):
    from safetensors.torch import save

    from models.clip import clip

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = save({k: v.contiguous() for k, v in tiny_clip_state.items()})
    sha = hashlib.sha256(data).hexdigest()
    repo = "tinyorg/tiny-clip-hub"
    pretrained_entry(monkeypatch, tiny_arch, "hubtag", hf_hub=f"{repo}/")
    path = f"/{repo}/resolve/main/open_clip_model.safetensors"
    server.serve(path, data, ETag=f'"{sha}"', **{"X-Repo-Commit": "a" * 40})
    status, out, err = cli("fetch-weights", f"clip:{tiny_arch}@hubtag", "--hf-endpoint", server.base, "--no-progress")
    assert status == 0, err
    assert str(tmp_path / "hf") in out and f"sha256 {sha[:12]}... matches the Hub's LFS ETag" in out
    assert any(p == path and m == "GET" for m, p, _ in server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    model = clip(tiny_arch, pretrained="hubtag", classnames=str(head_files[0]), templates=str(head_files[1]), label_space="pets-2")
    assert model.describe()["weights_sha256"] == sha
    status, out, _ = cli("fetch-weights", f"clip:{tiny_arch}@hubtag", "--hf-endpoint", server.base, "--no-progress")
    assert status == 0 and len(server.requests) == before  # offline: served from the cache
    assert "HF_HUB_OFFLINE set" in out


def test_a_hub_file_that_differs_from_its_etag_is_refused(tmp_path, server, monkeypatch, tiny_arch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = "tinyorg/tiny-clip-bad"
    pretrained_entry(monkeypatch, tiny_arch, "badtag", hf_hub=f"{repo}/")
    server.serve(f"/{repo}/resolve/main/open_clip_model.safetensors", b"not these bytes",
                 ETag=f'"{"0" * 64}"', **{"X-Repo-Commit": "b" * 40})
    status, _, err = cli("fetch-weights", f"clip:{tiny_arch}@badtag", "--hf-endpoint", server.base, "--no-progress")
    assert status == 2 and "0" * 64 in err
    assert not (tmp_path / "hf").exists()  # the wrong bytes are not left where an offline run would find them


def test_offline_mode_without_the_file_says_so(tmp_path, monkeypatch, tiny_arch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pretrained_entry(monkeypatch, tiny_arch, "hubtag2", hf_hub="tinyorg/absent/")
    status, _, err = cli("fetch-weights", f"clip:{tiny_arch}@hubtag2")
    assert status == 2 and "HF_HUB_OFFLINE" in err


def test_timm_weights_come_from_the_hub_named_by_timms_pretrained_table(tmp_path, server, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = b"stand-in for model.safetensors"  # the route is under test here, not the loader
    sha = hashlib.sha256(data).hexdigest()
    server.serve("/timm/resnet50.a1_in1k/resolve/main/model.safetensors", data, ETag=f'"{sha}"',
                 **{"X-Repo-Commit": "c" * 40})
    status, out, err = cli("fetch-weights", "timm:resnet50.a1_in1k", "--hf-endpoint", server.base, "--no-progress")
    assert status == 0, err
    path = out.split(": ", 1)[1].split(" (")[0]
    assert Path(path).read_bytes() == data and path.startswith(str(tmp_path / "hf"))
    assert f"--model timm:resnet50.a1_in1k --model-arg weights={path}" in out


@pytest.mark.parametrize("spec", ["clip:ViT-B-32", "resnet50", "clip:@openai"])
def test_a_malformed_weights_name_is_explained(spec):
    status, _, err = cli("fetch-weights", spec)
    assert status == 2 and "clip:" in err


def test_open_clip_openai_tags_carry_their_sha256_in_the_url():
    """The route ``fetch-weights clip:ARCH@openai`` takes, read from open_clip's own table: every
    OpenAI archive (RN50 ... ViT-L-14-336) is a direct URL with its sha256 in the path."""
    import open_clip

    from models.weights import open_clip_cfg, openai_url

    tags = [(m, t) for m, t in open_clip.list_pretrained() if t == "openai"]
    assert len(tags) >= 9
    assert all(openai_url(open_clip_cfg(m, t)) for m, t in tags)
    m = openai_url(open_clip_cfg("ViT-B-32", "openai"))
    assert m[0] == "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
