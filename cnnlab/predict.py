"""Prediction: class probabilities for uint8 images, as the tutorial's softmax gave them."""
from __future__ import annotations

import torch
from torch import nn

from .train import to_input


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N, classes) on the CPU for uint8 images (N, C, H, W)."""
    model.eval().to(device)
    chunks = [torch.softmax(model(to_input(images[i:i + batch_size].to(device))), dim=1).cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """The most probable class (N,) for each uint8 image."""
    return predict_proba(model, images, device).argmax(dim=1)
