"""What a recipe does to images beyond the tutorial's ``/ 255``: normalisation, training-time augmentation
and test-time augmentation.

Augmentation works on a whole batch on the device that holds it (uint8 in, uint8 out), as airbench does,
so no worker process or host copy sits in the loop. Its random draws come from a generator on that device
that the training state carries, so a resumed run draws what an unbroken one would.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import UsageError
from .recipes import as_given


# ---------------------------------------------------------------------------------------------------------
# Normalisation: the training split's statistics, kept with the run so evaluation and prediction reuse them
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]  # per channel, in [0, 1] pixel units

    @classmethod
    def of(cls, images: torch.Tensor) -> Normalization:
        """Per-channel mean and standard deviation of uint8 images (N, C, H, W); a constant channel gets a
        deviation of one grey level, so standardising it cannot divide by zero."""
        pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255  # (C, N·H·W)
        std = pixels.std(dim=1, correction=0).clamp_min(1 / 255)
        return cls(tuple(pixels.mean(dim=1).tolist()), tuple(std.tolist()))

    def apply(self, inputs: torch.Tensor) -> torch.Tensor:
        """Standardise float inputs in [0, 1] (N, C, H, W), in place."""
        mean, std = _statistics_on(self.mean, self.std, inputs.device)
        return inputs.sub_(mean).div_(std)


@functools.cache  # once per statistics and device, not a host-to-device copy per batch
def _statistics_on(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


# ---------------------------------------------------------------------------------------------------------
# Training-time augmentation, one batch at a time
# ---------------------------------------------------------------------------------------------------------
def check_translate(translate: int, image_shape: Sequence[int]) -> None:
    """A one-line UsageError unless shifts of up to ``translate`` pixels fit images of ``image_shape`` (C, H, W):
    the border that comes in is the image reflected, and a shift as large as a side has nothing left to reflect."""
    height, width = image_shape[-2:]
    if translate >= min(height, width):
        raise UsageError(f"{as_given('translate', translate)}: the images are {height}×{width} pixels, so shift them "
                         f"by at most {min(height, width) - 1}")


def augment(images: torch.Tensor, flip: bool, translate: int, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 and shift it by up to ``translate`` pixels each way."""
    n = len(images)
    if flip:
        mirrored = torch.rand(n, device=images.device, generator=generator) < 0.5
        images = torch.where(mirrored.view(n, 1, 1, 1), images.flip(3), images)
    if translate:
        shifts = torch.randint(-translate, translate + 1, (2, n), device=images.device, generator=generator)
        images = shift(images, shifts[0], shifts[1])
    return images


def shift(images: torch.Tensor, rows: torch.Tensor | int, cols: torch.Tensor | int) -> torch.Tensor:
    """Each image (N, C, H, W) moved by its own ``rows``, ``cols`` pixels (N,) or all by the same; the border
    that comes in is the image reflected, as airbench's padded crops give it."""
    n, channels, height, width = images.shape
    device = images.device
    rows = torch.as_tensor(rows, device=device).expand(n)
    cols = torch.as_tensor(cols, device=device).expand(n)
    source_rows = _reflect(torch.arange(height, device=device) - rows[:, None], height)  # (N, H)
    source_cols = _reflect(torch.arange(width, device=device) - cols[:, None], width)  # (N, W)
    return images[torch.arange(n, device=device).view(n, 1, 1, 1),
                  torch.arange(channels, device=device).view(1, channels, 1, 1),
                  source_rows.view(n, 1, height, 1),
                  source_cols.view(n, 1, 1, width)]


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices that run off either edge bounce back in (-1 → 1, size → size - 2)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


# ---------------------------------------------------------------------------------------------------------
# Test-time augmentation: the logits averaged over a few copies of each image
# ---------------------------------------------------------------------------------------------------------
def tta_logits(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, mode: str = "none"
               ) -> torch.Tensor:
    """'flip': the image and its mirror; 'flip-translate': half that, half the same one pixel up-left and one
    down-right (airbench's level 2)."""
    def mirrored(batch: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(batch) + model(batch.flip(3)))

    if mode == "none":
        return model(inputs)
    if mode == "flip":
        return mirrored(inputs)
    shifted = 0.5 * (mirrored(shift(inputs, -1, -1)) + mirrored(shift(inputs, 1, 1)))
    return 0.5 * mirrored(inputs) + 0.5 * shifted
