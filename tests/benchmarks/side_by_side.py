"""shiftbench and the real CLIP_benchmark, side by side: same JPEGs, model, head and machine.

Both tools run as whole processes (imports, model load and the image loop, as a user meets
them), interleaved round by round so load from other jobs hits both alike:

- ``clip_benchmark``: ``clip_benchmark eval`` 1.6.2 through the peer tools'
  ``run_clip_benchmark.py`` (which only adds timers and swaps its numpy>=2.4-broken
  ``accuracy()``), on CLIP_benchmark's own webdataset layout, ``--load_clfs`` head, default amp
  (bf16 autocast);
- ``first pass``: ``shiftbench run`` on the same shards, no image cache, ``--precision bf16``
  (and ``bf16-weights``), the same checkpoint with the same head (``100 * W``);
- ``cached pass``: a run reading the decoded-image cache, timed by the engine, against
  ``model only``: the engine's forward on uint8 batches already in memory, same precision.

Also used as a script by ``tox -e gpu-bench`` (``python tests/benchmarks/side_by_side.py``),
which writes its figures as JSON. Peer tools (``make_shiftdata.py``, ``run_clip_benchmark.py``)
are found through ``SHIFTBENCH_PEER_TOOLS`` or ``../shared/bench`` next to the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def peer_tools() -> Path | None:
    """The folder holding make_shiftdata.py and run_clip_benchmark.py, if there is one."""
    env = os.environ.get("SHIFTBENCH_PEER_TOOLS")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench"]:
        if (cand / "run_clip_benchmark.py").is_file() and (cand / "make_shiftdata.py").is_file():
            return cand
    return None


def machine() -> dict:
    """What the figures depend on: CPU capability, native bf16, threads, load, GPU."""
    import torch

    from harness.engine.numerics import cpu_capability, native_bf16_cpu

    out = {"cpu_capability": cpu_capability(), "native_bf16": native_bf16_cpu(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def make_data(tools: Path, out: Path, n: int, shard_size: int) -> Path:
    """ImageNet-sized synthetic JPEGs as CLIP_benchmark webdataset shards; returns the wds root."""
    wds = out / "wds_imagenetv2"
    if not (wds / "test" / "nshards.txt").is_file():
        subprocess.run([PYTHON, str(tools / "make_shiftdata.py"), "--n", str(n), "--out", str(out),
                        "--shard-size", str(shard_size)], check=True, capture_output=True)
    return wds


def make_assets(out: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """A random-init ViT-B-32 checkpoint (CLIP_benchmark loads it with ``--pretrained``), a random
    unit-column 512x1000 head (``--load_clfs``), and the same weights and head as a fine-tuned
    classifier for shiftbench (``classification_head.weight = 100 * head.T``, zero bias)."""
    import open_clip
    import torch

    from models.checkpoints import save_safetensors

    out.mkdir(parents=True, exist_ok=True)
    ckpt, head_path, ft = out / "vitb32_random.pt", out / "head_512x1000.pt", out / "vitb32_finetuned.safetensors"
    if not ft.is_file():
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        state = model.state_dict()
        torch.save(state, ckpt)
        head = torch.nn.functional.normalize(torch.randn(512, 1000), dim=0)
        torch.save(head, head_path)
        canonical = {k: v.contiguous() for k, v in state.items() if k.startswith("visual.")}
        canonical["classification_head.weight"] = (100.0 * head.T).contiguous()
        canonical["classification_head.bias"] = torch.zeros(1000)
        save_safetensors(canonical, ft)
    return ckpt, head_path, ft


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if out.returncode != 0 or "ERROR" in out.stdout:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({out.returncode}):\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    return elapsed


def clip_benchmark_cmd(tools: Path, wds: Path, ckpt: Path, head: Path, work: Path, workers: int, batch: int) -> list[str]:
    return [PYTHON, str(tools / "run_clip_benchmark.py"), "--timings-out", str(work / "cb_timings.jsonl"), "--tag", "side-by-side",
            "--", "eval", "--dataset", "wds/imagenetv2", "--dataset_root", str(wds), "--model", "ViT-B-32",
            "--pretrained", str(ckpt), "--load_clfs", str(head), "--batch_size", str(batch), "--num_workers", str(workers),
            "--output", str(work / "cb_result.json"), "--quiet"]  # fmt: skip


def shiftbench_cmd(wds: Path, ft: Path, run_dir: Path, precision: str, workers: int, batch: int, cache: Path | None,
                   decoder: str = "pil", device: str = "auto", arch: str = "ViT-B-32", config: Path | None = None) -> list[str]:
    """``shiftbench run`` as the benchmark times it. ``activation=gelu``: CLIP_benchmark builds
    open_clip's ViT-B-32 with GELU, and a checkpoint of unknown provenance must say which it is."""
    extra = ["--model-arg", f"config={config}"] if config is not None else []
    return [PYTHON, "-m", "harness", "run", "--model", f"finetuned:{arch}", "--model-arg", f"weights={ft}", *extra,
            "--model-arg", "activation=gelu", "--model-arg", f"label_space=wds:{wds.name}", "--shifts", "wds", "--data-root", str(wds), "--run-dir", str(run_dir),
            "--precision", precision, "--batch-size", str(batch), "--workers", str(workers), "--decoder", decoder,
            "--device", device, "--no-progress", *(["--cache-dir", str(cache)] if cache else ["--no-cache"])]  # fmt: skip


def cell_stats(run_dir: Path) -> tuple[float, float]:
    """The run's cell as the engine timed it: seconds of the pass, and the seconds of it spent
    re-running the fp32 agreement sample (once per model and run: a later cell has none)."""
    from harness.engine.store import RunDir

    prov = RunDir(run_dir).read_results()[0].provenance
    return float(prov["elapsed_s"]), float(prov.get("fp32_agreement_s") or 0.0)


def model_only(ft: Path, wds: Path, precision: str, n: int, batch: int, device: str = "cpu") -> float:
    """The engine's own forward on uint8 batches already in memory: the limit of any pass."""
    import torch

    from harness.engine.numerics import applied, place, plan
    from harness.engine.predict import make_forward
    from models.clip import finetuned

    clf = finetuned("ViT-B-32", weights=str(ft), label_space=f"wds:{wds.name}", activation="gelu")
    dev = torch.device(device)
    place(clf, dev)
    numerics = plan(precision, clf)
    forward = make_forward(clf, dev, numerics)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(dev)
    with applied(clf, numerics):
        forward(x)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, batch):
            forward(x[: min(batch, n - i)])
        return n / (time.perf_counter() - start)


def side_by_side(work: Path, n: int, rounds: int = 2, workers: int = 2, batch: int = 64, device: str = "auto",
                 decoders: tuple[str, ...] = ("pil",), precisions: tuple[str, ...] = ("bf16", "bf16-weights")) -> dict:
    """Interleaved rounds of every pipeline; each figure is the best round (this box is shared)."""
    tools = peer_tools()
    if tools is None:
        raise FileNotFoundError("peer tools not found: set SHIFTBENCH_PEER_TOOLS to the folder with run_clip_benchmark.py")
    wds = make_data(tools, work / "data", n, shard_size=max(1, -(-n // max(workers, 4))))
    ckpt, head, ft = make_assets(work / "assets")
    figures: dict = {"images": n, "machine_start": machine()}
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    warm = shiftbench_cmd(wds, ft, work / "warm", "bf16", workers, batch, work / "cache-warm", device=device)
    timed(warm)  # page cache, the cached pass's entry
    for r in range(rounds):
        keep("clip_benchmark_s", timed(clip_benchmark_cmd(tools, wds, ckpt, head, work, workers, batch)))
        for precision in precisions:
            for decoder in decoders:
                run_dir = work / f"first-{precision}-{decoder}-{r}"
                key = f"first_pass_{precision}_{decoder}"
                keep(f"{key}_s", timed(shiftbench_cmd(wds, ft, run_dir, precision, workers, batch, None, decoder, device)))
                keep(f"{key}_fp32_agreement_s", cell_stats(run_dir)[1])
        cached_dir = work / f"cached-{r}"
        keep("cached_pass_bf16_process_s", timed(shiftbench_cmd(wds, ft, cached_dir, "bf16", workers, batch, work / "cache-warm", device=device)))
        elapsed, check = cell_stats(cached_dir)  # a later cell of the model runs no agreement check
        best["cached_pass_bf16_img_s"] = max(best.get("cached_pass_bf16_img_s", 0.0), n / (elapsed - check))
        best["model_only_bf16_img_s"] = max(best.get("model_only_bf16_img_s", 0.0), model_only(ft, wds, "bf16", min(n, 8 * batch), batch,
                                                                                                  "cuda" if device != "cpu" and _cuda() else "cpu"))
    cb = best["clip_benchmark_s"]
    figures.update({k: round(v, 3) for k, v in best.items()})
    for key, seconds in best.items():
        if key.startswith("first_pass_") and not key.endswith("agreement_s"):
            figures[key[: -len("_s")] + "_vs_clip_benchmark"] = round(cb / seconds, 3)
    figures["cached_vs_model_only"] = round(best["cached_pass_bf16_img_s"] / best["model_only_bf16_img_s"], 3)
    figures["machine_end"] = machine()
    return figures


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def head_build(classes: int, rounds: int = 2) -> dict:
    """shiftbench's zero-shot head build (sorted, EOT-truncated prompts) vs CLIP_benchmark's
    ``zero_shot_classifier`` (amp, its default) on the same ViT-B-32 text tower, classes and
    80 templates, interleaved; then the cached head's reload time."""
    import open_clip
    import torch
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    from models.prompts import load_classnames, load_templates
    from models.zeroshot import build_zeroshot_head, cached_zeroshot_head

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    names = load_classnames("imagenet-1k")[1][:classes]
    templates = load_templates("openai-imagenet-80")[1]
    cb_templates = [t.replace("{}", "{c}") if "{c}" not in t else t for t in templates]
    ours_s, cb_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        ours = build_zeroshot_head(model, tokenizer, names, templates, bf16=True, progress=False)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = zero_shot_classifier(model, tokenizer, names, cb_templates, device, amp=True)
        cb_s.append(time.perf_counter() - start)
    cos = torch.nn.functional.cosine_similarity(ours.float().cpu(), theirs.T.float().cpu(), dim=1)
    os.environ.setdefault("SHIFTBENCH_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "shiftbench-head-bench"))
    cached_zeroshot_head(model, tokenizer, names, templates, weights_id="head-bench", arch="ViT-B-32", bf16=True, progress=False)
    start = time.perf_counter()
    _, info = cached_zeroshot_head(model, tokenizer, names, templates, weights_id="head-bench", arch="ViT-B-32", bf16=True, progress=False)
    reload_s = time.perf_counter() - start
    return {"classes": classes, "templates": len(templates), "prompts": classes * len(templates),
            "ours_s": round(min(ours_s), 3), "clip_benchmark_s": round(min(cb_s), 3),
            "speedup_vs_clip_benchmark": round(min(cb_s) / min(ours_s), 2), "cached_reload_s": round(reload_s, 4),
            "cached": info["cache"], "min_cosine_vs_clip_benchmark": round(float(cos.min()), 4), "machine": machine()}


def sweep_endpoints(out: Path, arch: str, config: Path | None) -> tuple[Path, Path]:
    """Zero-shot and fine-tuned classifiers of ``arch`` (random weights, 1000-class heads)."""
    import open_clip
    import torch

    from models.checkpoints import save_safetensors
    from models.clip import register_config

    out.mkdir(parents=True, exist_ok=True)
    if config is not None:
        register_config(config)
    paths = (out / f"{arch}-zeroshot.safetensors", out / f"{arch}-finetuned.safetensors")
    for seed, path in enumerate(paths):
        if path.is_file():
            continue
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("visual.")}
        width = int(model.text_projection.shape[1]) if model.text_projection is not None else int(model.visual.output_dim)
        state["classification_head.weight"] = 100.0 * torch.nn.functional.normalize(torch.randn(1000, width), dim=1)
        state["classification_head.bias"] = torch.zeros(1000)
        save_safetensors(state, path)
    return paths


def wiseft_sweep(work: Path, per_class: int, alphas: int = 11, device: str = "auto", workers: int = 2, batch: int = 256,
                 arch: str = "ViT-B-32", config: Path | None = None) -> dict:
    """``shiftbench wiseft`` over ImageNet plus five shifts (fixture layouts, reduced size):
    endpoints with random weights, ``alphas`` alphas, from a cold image cache."""
    from shifts import fixtures

    data = work / "sweep-data"
    if not data.exists():
        fixtures.write_imagenet_val(data, per_class=per_class)
        fixtures.write_imagenetv2(data, per_class=per_class)
        fixtures.write_imagenet_r(data, per_class=per_class)
        fixtures.write_imagenet_a(data, per_class=per_class)
        fixtures.write_imagenet_sketch(data, per_class=per_class)
        fixtures.write_objectnet(data, per_class=per_class)
    zs, ft = sweep_endpoints(work / "sweep-assets", arch, config)
    extra = ["activation=gelu", *([f"config={config}"] if config is not None else [])]
    alpha_list = ",".join(f"{i / (alphas - 1):.6g}" for i in range(alphas))
    cmd = [PYTHON, "-m", "harness", "wiseft", "--zeroshot", f"finetuned:{arch}", *[a for e in [f"weights={zs}", *extra] for a in ("--zeroshot-arg", e)],
           "--finetuned", f"finetuned:{arch}", *[a for e in [f"weights={ft}", *extra] for a in ("--finetuned-arg", e)],
           "--alphas", alpha_list, "--shifts", "imagenetv2,imagenet-r,imagenet-a,imagenet-sketch,objectnet", "--data-root", str(data),
           "--run-dir", str(work / "sweep-run"), "--cache-dir", str(work / "sweep-cache"), "--precision", "bf16",
           "--batch-size", str(batch), "--workers", str(workers), "--device", device, "--allow-incomplete", "--no-progress"]  # fmt: skip
    seconds = timed(cmd)
    from harness.engine.store import RunDir

    cells = list(RunDir(work / "sweep-run").stored_predictions())
    images = sum(meta["n"] for _, meta in cells)
    return {"arch": arch, "alphas": alphas, "cells": len(cells), "images": images, "sweep_s": round(seconds, 2),
            "sweep_img_s": round(images / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GPU (or CPU smoke) benchmark: shiftbench vs CLIP_benchmark, ratios as JSON")
    p.add_argument("--work", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "shiftbench-gpu-bench"))
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--head-classes", type=int, default=1000)
    p.add_argument("--sweep-per-class", type=int, default=2)
    p.add_argument("--sweep-alphas", type=int, default=11)
    p.add_argument("--sweep-arch", default="ViT-B-32", help="open_clip architecture of the sweep's endpoints")
    p.add_argument("--sweep-config", help="open_clip model config JSON for --sweep-arch (a custom architecture)")
    p.add_argument("--out", default="gpu-bench.json")
    args = p.parse_args(argv)
    work = Path(args.work)
    figures = {"side_by_side": side_by_side(work, args.images, args.rounds, args.workers, args.batch_size, args.device,
                                            decoders=("torchvision", "pil"), precisions=("bf16",)),
               "head": head_build(args.head_classes, rounds=1),
               "wiseft_sweep": wiseft_sweep(work, args.sweep_per_class, args.sweep_alphas, args.device, args.workers,
                                            args.batch_size, args.sweep_arch, Path(args.sweep_config) if args.sweep_config else None)}
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
