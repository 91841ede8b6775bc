"""Bad input gets a clear error and changes nothing: every check of a command's plan (models
resolvable and buildable, checkpoints readable and of the named architecture, options known,
datasets present, models fitting the shifts) runs before its first write. A refused command
leaves no run directory, no changed ``config.json`` or ``results.jsonl``, no lock or temp file,
no cache entry and no zero-shot head behind.

Each test records every path (and the sha256 of every file) under the run directory and the
cache before the refused command and compares after it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from doubles import LINEAR_WEIGHTS, engine_flags, tree_state
from safetensors.torch import save_file

from harness.cli import main
from harness.engine.store import RunDir

# A one-layer open_clip ViT (random weights): a real zero-shot CLIP whose head is cached.
TINY_CLIP = {
    "quick_gelu": True,
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch) -> Path:
    """The image and zero-shot head caches of every command here (watched like the run directory)."""
    monkeypatch.setenv("SHIFTBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Real checkpoints of timm's tiny test architectures, an unreadable one and a tiny CLIP."""
    import timm

    from models.clip import create_open_clip, register_config

    out = tmp_path / "files"
    out.mkdir()
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=4).state_dict(), str(out / "resnet.safetensors"))
    save_file(timm.create_model("test_resnet", num_classes=4).state_dict(), str(out / "resnet2.safetensors"))
    save_file(timm.create_model("test_vit", num_classes=4).state_dict(), str(out / "vit.safetensors"))
    (out / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip archive at all")
    (out / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    register_config(out / "tiny-clip.json")
    torch.save(create_open_clip("tiny-clip").state_dict(), out / "clip.pt")
    (out / "names.txt").write_text("red\ngreen\nblue\nwhite\n")
    return out


def timm_model(weights: Path, arch: str = "test_resnet") -> list[str]:
    return ["--model", f"timm:{arch}", "--model-arg", f"weights={weights}", "--model-arg", "num_classes=4",
            "--model-arg", "label_space=toy-4"]  # fmt: skip


def clip_model(files: Path) -> list[str]:
    return ["--model", "clip:tiny-clip", "--model-arg", f"weights={files / 'clip.pt'}", "--model-arg",
            f"config={files / 'tiny-clip.json'}", "--model-arg", f"classnames={files / 'names.txt'}", "--model-arg",
            "templates=simple-imagenet-7", "--model-arg", "label_space=toy-4"]  # fmt: skip


def flags(data: Path, run_dir: Path) -> list[str]:
    """``engine_flags`` with the image cache on (in the watched cache folder)."""
    return [f for f in engine_flags(data, run_dir) if f != "--no-cache"]


def refused(args: list[str], watched: list[Path], capsys) -> str:
    """Run the real command line; it must exit 2 and leave ``watched`` exactly as it was. Returns
    its error line."""
    before = tree_state(*watched)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert tree_state(*watched) == before
    return err[-1]


# (models and shifts of the refused run, what its error must say: the file or option, and the fix)
CASES = {
    "missing dataset": (lambda f, data: ["--model", "colour:b", "--shifts", "imagenetv2"],
                        lambda f, data: [f"imagenet not found under {data}", "Get it from https://image-net.org"]),
    "missing user folder": (lambda f, data: ["--model", "fake:b", "--model-arg", "num_classes=4", "--model-arg", "label_space=folder:x",
                                             "--shifts", "folder", "--data-root", str(data / "pets")],
                            lambda f, data: [f"{data / 'pets'}: no such folder; for the folder shift --data-root is the dataset folder"]),
    "unreadable checkpoint": (lambda f, data: [*timm_model(f / "garbage.pt"), "--shifts", "toy-sub"],
                              lambda f, data: [f"{f / 'garbage.pt'}: not a readable checkpoint",
                                               "expected a .safetensors file or a torch.save'd state dict"]),
    "wrong architecture": (lambda f, data: [*timm_model(f / "resnet.safetensors", "test_vit"), "--shifts", "toy-sub"],
                           lambda f, data: [f"{f / 'resnet.safetensors'}: does not fit timm architecture 'test_vit'",
                                            "check the architecture name matches the checkpoint"]),
    "unknown model option": (lambda f, data: ["--model", "fake:b", "--model-arg", "num_classes=4", "--model-arg", "label_space=toy-4",
                                              "--model-arg", "sed=1", "--shifts", "toy-sub"],
                             lambda f, data: ["model fake: unknown option 'sed'. Did you mean seed?"]),
    "model of another label space": (lambda f, data: ["--model", "fake:b", "--shifts", "toy-sub"],
                                     lambda f, data: ["model 'fake:b' outputs label space 'imagenet-1k' but shift 'toy' needs 'toy-4'",
                                                      "choose a model with that head"]),
    "second model refused": (lambda f, data: ["--model", "colour:b", *timm_model(f / "garbage.pt"), "--shifts", "toy-sub"],
                             lambda f, data: [f"{f / 'garbage.pt'}: not a readable checkpoint"]),
    "zero-shot CLIP next to a refused model": (
        lambda f, data: [*clip_model(f), "--model", "fake:b", "--model-arg", "sed=1", "--shifts", "toy-sub"],
        lambda f, data: ["model fake: unknown option 'sed'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_run_leaves_no_run_directory(case, tmp_path, data, files, cache, capsys):
    plan, says = CASES[case]
    run_dir = tmp_path / "run"
    err = refused(["run", *flags(data, run_dir), *plan(files, data)], [run_dir, cache], capsys)
    assert err.startswith("shiftbench run: error: ")
    for words in says(files, data):
        assert words in err
    assert not run_dir.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_run_leaves_an_existing_run_directory_byte_identical(case, tmp_path, data, files, cache, capsys):
    plan, says = CASES[case]
    run_dir = tmp_path / "run"
    assert main(["run", "--model", "colour:a", "--shifts", "toy-sub", *flags(data, run_dir)]) == 0
    assert len(RunDir(run_dir).read_results()) == 3
    err = refused(["run", *flags(data, run_dir), *plan(files, data)], [run_dir, cache, files], capsys)
    for words in says(files, data):
        assert words in err


def test_the_watched_files_do_change_in_a_run_that_is_not_refused(tmp_path, data, files, cache):
    """The counterpart of the cases above: a zero-shot CLIP next to a good model writes the run
    directory, the image cache and its head, and a second run with a new model adds it to
    ``config.json`` (the union of every run into the directory)."""
    run_dir = tmp_path / "run"
    assert main(["run", *clip_model(files), *timm_model(files / "resnet.safetensors"), "--shifts", "toy-sub",
                 *flags(data, run_dir)]) == 0  # fmt: skip
    assert list((cache / "zeroshot-heads").glob("*.safetensors")) and list(cache.glob("*.u8"))
    assert {r.model for r in RunDir(run_dir).read_results()} == {"clip:tiny-clip", "timm:test_resnet"}
    assert main(["run", "--model", "colour:a", "--shifts", "toy", *flags(data, run_dir)]) == 0
    config = RunDir(run_dir).read_config()
    assert [m.split()[0] for m in config.models] == ["clip:tiny-clip", "timm:test_resnet", "colour:a"]
    assert config.shifts == ("toy-sub", "toy")


def test_a_refused_wiseft_writes_nothing(tmp_path, data, files, cache, capsys):
    run_dir = tmp_path / "wiseft"
    common = ["--model-arg", "num_classes=4", "--model-arg", "label_space=toy-4"]
    args = ["wiseft", "--zeroshot", "timm:test_resnet", "--zeroshot-arg", f"weights={files / 'resnet.safetensors'}",
            "--finetuned", "timm:test_resnet", "--finetuned-arg", f"weights={files / 'garbage.pt'}", *common,
            "--alphas", "0,0.5,1", "--shifts", "toy-sub", *flags(data, run_dir)]  # fmt: skip
    err = refused(args, [run_dir, cache], capsys)
    assert f"{files / 'garbage.pt'}: not a readable checkpoint" in err
    args[args.index(f"weights={files / 'garbage.pt'}")] = f"weights={files / 'vit.safetensors'}"
    err = refused(args, [run_dir, cache], capsys)
    assert f"{files / 'vit.safetensors'}: does not fit timm architecture 'test_resnet'" in err
    args[args.index(f"weights={files / 'vit.safetensors'}")] = f"weights={files / 'resnet2.safetensors'}"
    assert main([*args, "--model-arg", "sed=1"]) == 2
    assert tree_state(run_dir) == {str(run_dir): "absent"}
    assert main(args) == 0  # the same sweep with good endpoints runs
    assert len(RunDir(run_dir).read_results()) == 9


def test_a_refused_soup_writes_nothing(tmp_path, data, files, cache, capsys):
    run_dir = tmp_path / "soup"
    ingredients = tmp_path / "ingredients"
    ingredients.mkdir()
    shutil.copy(files / "resnet.safetensors", ingredients / "a.safetensors")
    shutil.copy(files / "vit.safetensors", ingredients / "b.safetensors")
    args = ["soup", "--model", "timm:test_resnet", "--model-arg", "num_classes=4", "--model-arg", "label_space=toy-4",
            "--ingredients", str(ingredients), "--shifts", "toy-sub", *flags(data, run_dir)]  # fmt: skip
    err = refused(args, [run_dir, cache], capsys)
    assert f"{ingredients / 'b.safetensors'}:" in err and "ingredients must be checkpoints of the same architecture" in err


def test_a_greedy_soup_is_refused_before_it_selects_when_a_reported_shift_is_missing(tmp_path, data, cache, capsys):
    """Greedy selection runs cells on the held-out shift: the reported shifts' data is checked
    before the first of them."""
    ingredients = tmp_path / "ingredients"
    ingredients.mkdir()
    for name, (w, b) in LINEAR_WEIGHTS.items():
        save_file({"fc.weight": torch.tensor(w), "fc.bias": torch.tensor(b)}, str(ingredients / f"{name}.safetensors"))
    run_dir = tmp_path / "soup"
    args = ["soup", "--model", "linear:zs", "--ingredients", str(ingredients), "--recipe", "greedy",
            "--held-out", "toy-heldout", "--shifts", "imagenetv2", *flags(data, run_dir)]  # fmt: skip
    err = refused(args, [run_dir, cache], capsys)
    assert f"imagenet not found under {data}" in err and "Get it from https://image-net.org" in err


def test_score_refuses_a_missing_run_directory_without_making_it(tmp_path, capsys):
    run_dir = tmp_path / "no-such-run"
    err = refused(["score", str(run_dir)], [run_dir], capsys)
    assert f"{run_dir / 'results.jsonl'}: no results to score; run `shiftbench run` first" in err


def test_score_refuses_a_changed_predictions_file_and_changes_nothing(tmp_path, data, capsys):
    """A run directory copied without its lock files (an archive, a colleague's share) gets none."""
    run_dir = tmp_path / "run"
    assert main(["run", "--model", "colour:a", "--shifts", "toy-sub", *engine_flags(data, run_dir)]) == 0
    (run_dir / ".lock").unlink()
    shutil.rmtree(run_dir / ".locks")
    path = RunDir(run_dir).predictions_path("colour:a", "toy")
    from harness.api import Predictions

    preds = Predictions.load(path)
    preds.logits[0, 0] += 1
    preds.save(path)
    err = refused(["score", str(run_dir)], [run_dir], capsys)
    assert f"{path}: changed since it was scored (sha256 differs)" in err and "add --redo" in err


def test_a_run_of_another_configuration_is_refused_without_a_lock_file(tmp_path, data, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "--model", "colour:a", "--shifts", "toy-sub", *engine_flags(data, run_dir)]) == 0
    (run_dir / ".lock").unlink()
    shutil.rmtree(run_dir / ".locks")
    err = refused(["run", "--model", "colour:b", "--shifts", "toy-sub", "--seed", "3", *engine_flags(data, run_dir)], [run_dir], capsys)
    assert f"run directory {run_dir} was made with another configuration (seed: 0 -> 3); use a new --run-dir, or the original settings" in err


def test_a_refused_ensemble_writes_no_shift_of_it(tmp_path, data, capsys):
    """The second shift's member predictions changed: the first shift's ensemble is not kept either."""
    run_dir = tmp_path / "run"
    assert main(["run", "--model", "linear:zs", "--model", "linear:ft", "--shifts", "toy-sub", *engine_flags(data, run_dir)]) == 0
    path = RunDir(run_dir).predictions_path("linear:ft", "toy-sub")
    from harness.api import Predictions

    preds = Predictions.load(path)
    preds.logits[0, 0] += 1
    preds.save(path)
    err = refused(["ensemble", str(run_dir), "--members", "linear:zs,linear:ft"], [run_dir], capsys)
    assert f"{path}: changed since linear:ft was scored on toy-sub; rerun that cell first" in err


def test_an_incomplete_dataset_is_refused_before_the_run_directory_exists(tmp_path, data, cache, capsys):
    (data / "toy-sub" / "d" / "s02.png").unlink()
    run_dir = tmp_path / "run"
    err = refused(["run", "--model", "colour:a", "--shifts", "toy-sub", *flags(data, run_dir)], [run_dir, cache], capsys)
    assert f"shift 'toy-sub' under {data}: 3 examples in split 'test', expected 4" in err
    assert "see `shiftbench check-data`), or pass --allow-incomplete" in err
