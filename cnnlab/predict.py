"""Prediction: class probabilities for uint8 images, as the tutorial's softmax gave them."""
from __future__ import annotations

import torch
from torch import nn

from .augment import Normalization, tta_logits
from .train import to_input


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 1000, normalization: Normalization | None = None,
                  tta: str = "none") -> torch.Tensor:
    """Softmax probabilities (N, classes) on the CPU for uint8 images (N, C, H, W); ``normalization`` and
    ``tta`` are the run's (``ModelInfo.normalization``, ``Recipe.tta``)."""
    model.eval().to(device)
    chunks = [torch.softmax(tta_logits(model, to_input(images[i:i + batch_size].to(device), normalization), tta),
                            dim=1).cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
            normalization: Normalization | None = None, tta: str = "none") -> torch.Tensor:
    """The most probable class (N,) for each uint8 image."""
    return predict_proba(model, images, device, normalization=normalization, tta=tta).argmax(dim=1)
