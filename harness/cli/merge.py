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
            "Merge checkpoints of one architecture, in fp32, under the first checkpoint's parameter names "
            "(a name saved under another prefix, e.g. model.visual.* vs image_encoder.model.visual.*, is matched "
            "as the soups and sweeps match it). "
            "wiseft: (1 - alpha) * CKPT1 + alpha * CKPT2 over every parameter (heads included). "
            "uniform: the mean of all CKPTs (a folder expands to its checkpoint files). "
            "greedy: the mean of the ingredients a greedy-soup record accepted (--selection). "
            "Checkpoints are read without unpickling (safetensors or torch state dicts)."),
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint files (or folders, for soups)")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--alpha", type=float, default=None, help="wiseft: weight of the second (fine-tuned) checkpoint")
    p.add_argument("--encoder-only", action="store_true",
                   help="wiseft: interpolate only the image tower (visual.* under any prefix); the rest, "
                        "heads included, comes from CKPT1 (PAINT-style patching)")
    p.add_argument("--selection", metavar="JSON", help="greedy: the greedy-soup record naming the accepted ingredients")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="dtype of the written floats (default fp32)")
    p.add_argument("--out", required=True, help="output .safetensors file (written atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from models.checkpoints import file_sha256, save_safetensors
    from models.merging import average
    from models.soups import (
        aligned_views,
        ingredient_entry,
        list_ingredients,
        refuse_activation_mix,
        select_accepted,
    )
    from models.wiseft import wiseft_weights

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
        mode = "encoder" if args.encoder_only else "full"
        shas = [file_sha256(f) for f in files]
        refuse_activation_mix(files, shas)
        refuse_headless_zeroshot(files)
        zs, ft = aligned_views(files)
        merged = wiseft_weights(zs, ft, args.alpha, mode, labels=(str(files[0]), str(files[1])))
        meta.update(alpha=repr(args.alpha), mode=mode)
    else:
        if args.alpha is not None or args.encoder_only:
            raise ValueError(f"--alpha and --encoder-only apply to --method wiseft, not {args.method}")
        files = list_ingredients(args.checkpoints)
        if args.method == "greedy":
            if not args.selection:
                raise ValueError("--method greedy needs --selection greedy.json (the record of a greedy soup)")
            files, record = select_accepted(files, Path(args.selection))
            meta.update(heldout=record.heldout, greedy_final_score=repr(record.final_score))
        shas = [file_sha256(f) for f in files]
        refuse_activation_mix(files, shas)
        merged = average(aligned_views(files), progress=True, desc=f"{args.method} soup")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if dtype is not torch.float32:
        merged = {k: v.to(dtype) if v.is_floating_point() else v for k, v in merged.items()}
    meta.update(dtype=args.dtype, ingredients=json.dumps([ingredient_entry(f, sha) for f, sha in zip(files, shas, strict=True)]))
    sha = save_safetensors(merged, out, metadata=meta)
    print(f"wrote {out} ({len(merged)} tensors, {args.method}, {args.dtype}) sha256 {sha}")
    return 0


def refuse_headless_zeroshot(files) -> None:
    """Weight-space WiSE-FT interpolates the heads too: a zero-shot checkpoint without one (plain
    CLIP weights, whose head is built from class names) cannot be merged with a fine-tuned one."""
    from models.checkpoints import LazyStateDict
    from models.clip import HEAD_KEYS

    zs, ft = (any(k.endswith(HEAD_KEYS[0]) for k in LazyStateDict(f)) for f in files)
    if ft and not zs:
        raise ValueError(
            f"{files[0]}: no {HEAD_KEYS[0]} (plain CLIP weights?), and {files[1]} has one: give the zero-shot "
            "classifier with its head (WiSE-FT's zeroshot checkpoint), or run `shiftbench wiseft`, which builds "
            "the zero-shot head from class names")
