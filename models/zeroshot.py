"""Zero-shot heads: one unit-norm text embedding per class, built fast and cached on disk.

Recipe (WiSE-FT, model soups, open_clip, CLIP_benchmark): encode every ``template.format(name)``,
L2-normalise each embedding, average over templates, renormalise. (imagenet-testbed skips the
per-template normalisation; we do not mix the two.)

Speed: prompts are sorted by their end-of-text position and encoded in batches truncated to
the batch's longest prompt. For causal text towers pooled at the EOT token this is exact:
positions after the EOT cannot influence it through a causal mask. Other towers run the full
context. The head is cached under ``$SHIFTBENCH_CACHE`` (default ``~/.cache/shiftbench``)
keyed by the weights hash, architecture (its config and the activation the model is built
with: the same weights under GELU or QuickGELU give other heads), class names, templates and
recipe. The prompts are
encoded on the device the run uses (``harness.api.building_on``): a GPU run encodes them there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

HEAD_RECIPE = "normalise-each-template/mean/renormalise"


def cache_dir() -> Path:
    return Path(os.environ.get("SHIFTBENCH_CACHE") or Path.home() / ".cache" / "shiftbench")


def can_truncate(model) -> bool:
    """True for open_clip ``CLIP`` text towers: causal mask and argmax (EOT) pooling."""
    return (getattr(model, "text_pool_type", None) == "argmax"
            and getattr(model, "attn_mask", None) is not None
            and hasattr(model, "token_embedding") and hasattr(model, "transformer"))


def encode_text_truncated(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on a context cut to the batch's last EOT position (unnormalised)."""
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def encode_prompts(model, tokenizer, prompts: Sequence[str], batch_size: int = 128, bf16: bool = False,
                   truncate: bool = True, progress: bool = True) -> torch.Tensor:
    """Unit-norm fp32 text embeddings ``[len(prompts), D]`` in the prompts' order."""
    device = next(model.parameters()).device
    tokens = tokenizer(list(prompts))
    truncate = truncate and can_truncate(model)
    # Sort by EOT position so each truncated batch carries little padding.
    order = torch.argsort(tokens.argmax(dim=-1), stable=True) if truncate else torch.arange(len(tokens))
    out = None
    bar = tqdm(total=len(prompts), desc="zero-shot head", unit="prompt", disable=not progress)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokens[idx].to(device)
            emb = encode_text_truncated(model, batch) if truncate else model.encode_text(batch)
            emb = F.normalize(emb.float(), dim=-1)
            if out is None:
                out = torch.empty(len(prompts), emb.shape[1], dtype=torch.float32, device=device)
            out[idx.to(device)] = emb
            bar.update(len(idx))
    bar.close()
    return out


def build_zeroshot_head(model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                        batch_size: int = 128, bf16: bool = False, truncate: bool = True,
                        progress: bool = True) -> torch.Tensor:
    """``[num_classes, D]`` unit-norm class embeddings (row k = class k)."""
    if not classnames or not templates:
        raise ValueError("a zero-shot head needs at least one class name and one template")
    prompts = [t.format(c) for c in classnames for t in templates]
    emb = encode_prompts(model, tokenizer, prompts, batch_size=batch_size, bf16=bf16, truncate=truncate,
                         progress=progress)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def head_cache_key(weights_id: str, arch: str, classnames: Sequence[str], templates: Sequence[str], bf16: bool,
                   tower: str = "") -> str:
    """``tower``: what the text tower is built as beyond its weights (``text_tower_id``): the same
    weights built with GELU or QuickGELU, or under another config of the same name, encode the
    prompts differently, so their heads are other entries."""
    entry = {"weights": weights_id, "arch": arch, "classnames": list(classnames),
             "templates": list(templates), "recipe": HEAD_RECIPE, "precision": "bf16-autocast" if bf16 else "fp32"}
    if tower:
        entry["tower"] = tower
    payload = json.dumps(entry)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def text_tower_id(model, arch: str) -> str:
    """The model's activation as built (QuickGELU or not) and its open_clip config, as JSON."""
    import open_clip

    quick = any(type(m).__name__ == "QuickGELU" for m in model.modules())
    config = open_clip.get_model_config(arch)
    return json.dumps({"activation": "quickgelu" if quick else "gelu", "config": config}, sort_keys=True, default=str)


def cached_zeroshot_head(model, tokenizer, classnames: Sequence[str], templates: Sequence[str], weights_id: str,
                         arch: str, bf16: bool = False, use_cache: bool = True, progress: bool = True,
                         ) -> tuple[torch.Tensor, dict]:
    """Build or load the head; returns it and provenance (cache key, whether it was a hit)."""
    from safetensors.torch import load_file

    from harness.api import build_device
    from models.checkpoints import save_safetensors

    key = head_cache_key(weights_id, arch, classnames, templates, bf16, text_tower_id(model, arch))
    path = cache_dir() / "zeroshot-heads" / f"{key}.safetensors"
    info = {"recipe": HEAD_RECIPE, "cache_key": key, "precision": "bf16-autocast" if bf16 else "fp32",
            "num_templates": len(templates)}
    if use_cache and path.is_file():
        try:
            head = load_file(str(path))["head"]
            if head.shape[0] == len(classnames):
                return head, {**info, "cache": "hit"}
        except Exception:  # a torn or foreign file: rebuild and overwrite
            pass
    device = build_device()
    if device is not None:  # the run's device: a GPU encodes the prompts in a fraction of the CPU's time
        model.to(device)
    head = build_zeroshot_head(model, tokenizer, classnames, templates, bf16=bf16, progress=progress).cpu()
    if use_cache:
        save_safetensors({"head": head}, path, metadata={"arch": arch, "weights": weights_id, "recipe": HEAD_RECIPE})
    return head, {**info, "cache": "miss" if use_cache else "off"}
