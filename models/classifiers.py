"""The two Classifier shapes every wrapper reduces to.

``ImageHeadClassifier``: normalised image features times a linear head, which is how CLIP
zero-shot heads (text embeddings times a logit scale, zero bias), WiSE-FT's
``ImageClassifier`` and model soups' ``ModelWrapper(normalize=True)`` all score images.
``ModuleClassifier``: a module that already outputs logits (timm, torchvision).

Both are ``torch.nn.Module``s whose ``state_dict()`` uses the checkpoint's own parameter names
(``visual.*`` and ``classification_head.weight/bias``; the timm/torchvision module's keys), so the
engine's WiSE-FT and soup sweeps can merge weights and load them back into one instance.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.api import Classifier, PreprocessSpec


class _TorchClassifier(torch.nn.Module, Classifier):
    """Runs where its parameters are, in their dtype; the engine alone places it (``.to``)
    and opens the autocast, so a classifier never overrides ``--device`` or ``--precision``."""

    def __init__(self, name: str, label_space: str, num_classes: int, preprocess_spec: PreprocessSpec,
                 info: dict[str, Any]) -> None:
        torch.nn.Module.__init__(self)
        self.name = name
        self.label_space = label_space
        self.num_classes = num_classes
        self.preprocess_spec = preprocess_spec
        self.info = dict(info)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def placement(self) -> tuple[torch.device, torch.dtype]:
        """The device and floating dtype of the parameters: where and how the forward runs."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    def logits(self, images: Any) -> torch.Tensor:
        device, dtype = self.placement()
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images [B, 3, H, W], got {list(x.shape)}")
        x = x.to(device, dtype, non_blocking=True)
        with torch.no_grad():
            out = self._forward(x)
        return out.float()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label_space": self.label_space,
            "num_classes": self.num_classes,
            "preprocess": self.preprocess_spec.to_dict(),
            **self.info,
        }


class ImageHeadClassifier(_TorchClassifier):
    """``logits = normalize(visual(x)) @ weight.T + bias``.

    Parameters live under the canonical checkpoint names ``visual.*`` and
    ``classification_head.weight`` / ``.bias``; a head given without a bias (CLIP zero-shot)
    gets a zero bias, which leaves the logits unchanged and lets it merge with fine-tuned heads.
    """

    def __init__(self, name: str, encoder: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor | None,
                 preprocess_spec: PreprocessSpec, label_space: str, info: dict[str, Any],
                 normalize: bool = True) -> None:
        super().__init__(name, label_space, int(weight.shape[0]), preprocess_spec, info)
        self.visual = encoder.eval()
        head = torch.nn.Linear(int(weight.shape[1]), int(weight.shape[0]), device=weight.device)
        with torch.no_grad():
            head.weight.copy_(weight.detach().float())
            head.bias.copy_(bias.detach().float() if bias is not None else torch.zeros(int(weight.shape[0]), device=weight.device))
        self.classification_head = head.requires_grad_(False)
        self.normalize = normalize

    @property
    def encoder(self) -> torch.nn.Module:
        return self.visual

    @property
    def weight(self) -> torch.Tensor:
        return self.classification_head.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.classification_head.bias

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.visual(x).float()
        return F.normalize(feats, dim=-1) if self.normalize else feats

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # The head runs on fp32 features; with bf16 weights (``--precision bf16-weights``) it
        # is cast up rather than the features down. Under autocast both become bf16 as before.
        return F.linear(self.features(x), self.weight.float(), self.bias.float())


class ModuleClassifier(_TorchClassifier):
    """A module whose output already is ``[B, num_classes]`` logits."""

    def __init__(self, name: str, module: torch.nn.Module, num_classes: int, preprocess_spec: PreprocessSpec,
                 label_space: str, info: dict[str, Any]) -> None:
        super().__init__(name, label_space, num_classes, preprocess_spec, info)
        self.module = module.eval()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's own keys (as in its checkpoint), not ``module.*``."""
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
