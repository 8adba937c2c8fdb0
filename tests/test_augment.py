"""Normalisation, training-time augmentation and test-time augmentation: exact on small, known images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.augment import Normalization, augment, shift, tta_logits


def test_normalization_is_the_training_split_per_channel():
    images = torch.zeros(4, 2, 3, 3, dtype=torch.uint8)
    images[:, 1] = 255
    images[:2, 0] = 255  # channel 0: half the images white, half black
    norm = Normalization.of(images)
    assert norm.mean == pytest.approx((0.5, 1.0))
    assert norm.std == pytest.approx((0.5, 1 / 255))  # a constant channel: one grey level
    inputs = images.float() / 255
    standardised = Normalization((0.5, 0.5), (0.25, 0.5)).apply(inputs.clone())
    assert torch.allclose(standardised[:, 0], (inputs[:, 0] - 0.5) / 0.25)
    assert torch.allclose(standardised[:, 1], (inputs[:, 1] - 0.5) / 0.5)


def test_shift_reflects_the_border_as_airbench_pads():
    images = torch.arange(2 * 3 * 6 * 5, dtype=torch.uint8).view(2, 3, 6, 5)
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect")
    for rows, cols in [(1, 1), (-1, -1), (2, -1), (0, 2)]:
        expected = padded[:, :, 2 - rows:8 - rows, 2 - cols:7 - cols]
        assert torch.equal(shift(images, rows, cols).float(), expected)
    # each image its own shift
    moved = shift(images, torch.tensor([1, -2]), torch.tensor([0, 1]))
    assert torch.equal(moved[0], shift(images[:1], 1, 0)[0]) and torch.equal(moved[1], shift(images[1:], -2, 1)[0])


def test_augment_flips_and_shifts_whole_images_and_keeps_dtype():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    same = augment(images, flip=False, translate=0, generator=torch.Generator().manual_seed(0))
    assert same is images
    flipped = augment(images, flip=True, translate=0, generator=torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    kept = (flipped == images).flatten(1).all(1)
    assert flipped.dtype == torch.uint8 and bool((mirrored | kept).all()) and 16 < int(mirrored.sum()) < 48
    shifted = augment(images, flip=False, translate=2, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(shifted, images)
    # every output image is one of the 25 shifts of its input
    candidates = torch.stack([shift(images, r, c) for r in range(-2, 3) for c in range(-2, 3)])
    assert bool((candidates == shifted).flatten(2).all(2).any(0).all())
    # the same generator seed draws the same batch: a resumed run augments as an unbroken one
    again = augment(images, flip=True, translate=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, augment(images, flip=True, translate=2, generator=torch.Generator().manual_seed(5)))


def test_tta_averages_the_logits_of_the_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    inputs = torch.rand(5, 1, 8, 8)
    assert torch.equal(tta_logits(model, inputs, "none"), model(inputs))
    flip = tta_logits(model, inputs, "flip")
    assert torch.allclose(flip, (model(inputs) + model(inputs.flip(3))) / 2)
    full = tta_logits(model, inputs, "flip-translate")
    shifted = (tta_logits(model, shift(inputs, 1, 1), "flip") + tta_logits(model, shift(inputs, -1, -1), "flip")) / 2
    assert torch.allclose(full, (flip + shifted) / 2, atol=1e-6)
    # Every copy changes the answer of a model that tells left from right and one place from another, so the
    # checks above could not hold without the copies.
    assert not torch.allclose(flip, model(inputs), atol=1e-3) and not torch.allclose(full, flip, atol=1e-3)
    # The copies are averaged, not summed: a model blind to left and right gets its own logits back.
    symmetric = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 4))
    assert torch.allclose(tta_logits(symmetric, inputs, "flip"), symmetric(inputs))
    # shift(…, 1, 1) moves the picture one pixel down and right (the border that comes in is reflected)
    dot = torch.zeros(1, 1, 8, 8)
    dot[0, 0, 2, 5] = 1.0
    assert shift(dot, 1, 1)[0, 0, 3, 6] == 1.0 and shift(dot, 1, 1).sum() == 1.0


def test_translate_draws_every_shift_up_to_its_size_each_way_rows_and_columns_apart():
    """translate=2: each of the 25 shifts (−2…2 down, −2…2 right) about as often, +2 included and rows drawn apart
    from columns (not only the diagonal)."""
    image = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)  # every pixel its own value: each shift tells
    shifted = augment(image.expand(2500, 1, 8, 8), flip=False, translate=2, generator=torch.Generator().manual_seed(0))
    shifts = [(rows, cols) for rows in range(-2, 3) for cols in range(-2, 3)]
    candidates = torch.stack([shift(image, rows, cols)[0] for rows, cols in shifts])  # (25, 1, 8, 8)
    matches = (shifted[:, None] == candidates[None]).flatten(2).all(2)  # (2500, 25)
    assert bool((matches.sum(1) == 1).all())  # every output is exactly one of the shifts
    counts = matches.sum(0).tolist()
    assert min(counts) > 60 and max(counts) < 140, dict(zip(shifts, counts))  # 100 each expected
