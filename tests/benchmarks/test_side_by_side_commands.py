"""The side-by-side benchmark's own ``shiftbench run`` command, run in the normal suite on a
tiny real architecture: a benchmark whose command line the CLI has come to refuse (a model
option it now requires, a renamed flag) fails here, not only on the day someone benchmarks."""

from __future__ import annotations

import json
import subprocess

import torch
from side_by_side import ROOT, cell_stats, shiftbench_cmd

from shifts import fixtures, wds

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def tiny_finetuned(tmp_path):
    import open_clip

    from models.checkpoints import save_safetensors
    from models.clip import register_config

    config = tmp_path / "tiny-sbs-clip.json"
    config.write_text(json.dumps(TINY))
    register_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-sbs-clip", pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("visual.")}
    state["classification_head.weight"] = 100.0 * torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    state["classification_head.bias"] = torch.zeros(3)
    ft = tmp_path / "tiny-finetuned.safetensors"
    save_safetensors(state, ft)
    return config, ft


def test_the_benchmarks_shiftbench_command_runs(tmp_path):
    root = tmp_path / "wds_tiny"
    samples = [wds.ShardSample(f"s{i:07d}", i % 3, fixtures.image_bytes((10 * i, 20, 30)), "jpg") for i in range(6)]
    wds.write_split(root, "test", samples, ["cat", "dog", "fox"], ["a photo of a {c}."], maxcount=3)
    config, ft = tiny_finetuned(tmp_path)
    run_dir = tmp_path / "run"
    cmd = shiftbench_cmd(root, ft, run_dir, "bf16", workers=2, batch=4, cache=None, device="cpu", arch="tiny-sbs-clip", config=config)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    assert row["n"] == 6 and row["provenance"]["numerics"] == "bf16-autocast"
    elapsed, agreement = cell_stats(run_dir)
    assert elapsed > 0 and 0 < agreement <= elapsed  # the fp32 agreement re-run is part of the cell
