"""``shiftbench merge``: write WiSE-FT or soup weights as safetensors, to use them elsewhere."""

from __future__ import annotations

import argparse

METHODS = ("wiseft", "uniform", "greedy")
DTYPES = ("fp32", "fp16", "bf16")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge checkpoints in weight space (WiSE-FT, uniform or greedy soup) into a safetensors file",
        description=(
            "Merge checkpoints with identical parameter names and shapes, in fp32. "
            "wiseft: (1 - alpha) * CKPT1 + alpha * CKPT2 over every parameter (heads included). "
            "uniform: the mean of all CKPTs (a folder expands to its checkpoint files). "
            "greedy: the mean of the ingredients a greedy-soup record accepted (--selection). "
            "Checkpoints are read without unpickling (safetensors or torch state dicts)."),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files (or folders, for soups)")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--alpha", type=float, default=None, help="wiseft: weight of the second (fine-tuned) checkpoint")
    p.add_argument("--encoder-only", action="store_true",
                   help="wiseft: interpolate only the image tower (keys containing 'visual.'); the rest, "
                        "heads included, comes from CKPT1 (PAINT-style patching)")
    p.add_argument("--selection", metavar="JSON", help="greedy: the greedy-soup record naming the accepted ingredients")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="dtype of the written floats (default fp32)")
    p.add_argument("--out", required=True, help="output .safetensors file (written atomically)")
    p.set_defaults(func=run)


def _ingredients(specs: list[str]) -> list:
    from models.soups import list_ingredients

    files = []
    for spec in specs:
        files.extend(list_ingredients(spec))
    return files


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from models.checkpoints import file_sha256, save_safetensors
    from models.merging import average, interpolate

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: the merged weights are written as safetensors; name it *.safetensors")
    meta: dict[str, str] = {"method": args.method}
    if args.method == "wiseft":
        if len(args.checkpoints) != 2:
            raise ValueError(f"--method wiseft takes exactly two checkpoints (zero-shot, fine-tuned), got {len(args.checkpoints)}")
        if args.alpha is None:
            raise ValueError("--method wiseft needs --alpha (0 = first checkpoint, 1 = second)")
        files = [Path(c) for c in args.checkpoints]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"checkpoint not found: {f}")
        select = (lambda k: "visual." in k) if args.encoder_only else None
        merged = interpolate(files[0], files[1], args.alpha, select=select)
        meta.update(alpha=repr(args.alpha), mode="encoder" if args.encoder_only else "full")
    else:
        if args.alpha is not None or args.encoder_only:
            raise ValueError(f"--alpha and --encoder-only apply to --method wiseft, not {args.method}")
        files = _ingredients(args.checkpoints)
        if args.method == "greedy":
            if not args.selection:
                raise ValueError("--method greedy needs --selection greedy.json (the record of a greedy soup)")
            from models.soups import select_accepted

            files, record = select_accepted(files, Path(args.selection))
            meta.update(heldout=record.heldout, greedy_final_score=repr(record.final_score))
        merged = average(files, progress=True, desc=f"{args.method} soup")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if dtype is not torch.float32:
        merged = {k: v.to(dtype) if v.is_floating_point() else v for k, v in merged.items()}
    meta.update(dtype=args.dtype, ingredients=json.dumps([{"path": str(f), "sha256": file_sha256(f)} for f in files]))
    sha = save_safetensors(merged, out, metadata=meta)
    print(f"wrote {out} ({len(merged)} tensors, {args.method}, {args.dtype}) sha256 {sha}")
    return 0
