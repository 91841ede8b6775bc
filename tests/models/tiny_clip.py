"""The tiny open_clip architecture and inputs the models tests share (imported by name, so
the module has a name no other test folder uses)."""

import torch

# ``quick_gelu`` is stated, as a config for real weights must (or activation= must say it).
TINY_CLIP = {
    "quick_gelu": False,
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def make_clip(arch, seed):
    from models.clip import create_open_clip

    torch.manual_seed(seed)
    model = create_open_clip(arch)
    with torch.no_grad():  # make the logit scale a non-trivial learned value
        model.logit_scale.fill_(float(torch.log(torch.tensor(50.0 + seed))))
    return model


def images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
