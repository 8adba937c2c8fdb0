"""Prediction: class probabilities for uint8 images, as the tutorial's softmax gave them, and for image files."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import torch
from torch import nn

from .augment import Normalization, tta_logits
from .data import ImageSet
from .errors import CnnlabError
from .models import check_input
from .train import to_input

if TYPE_CHECKING:
    from .runs import Run


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 1000, normalization: Normalization | None = None,
                  tta: str = "none") -> torch.Tensor:
    """Softmax probabilities (N, classes) on the CPU for uint8 images (N, C, H, W); ``normalization`` and
    ``tta`` are the run's (``ModelInfo.normalization``, ``Recipe.tta``)."""
    check_input(model, images.shape[1:])
    model.eval().to(device)
    chunks = [torch.softmax(tta_logits(model, to_input(images[i:i + batch_size].to(device), normalization), tta)
                            .float(), dim=1).cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
            normalization: Normalization | None = None, tta: str = "none") -> torch.Tensor:
    """The most probable class (N,) for each uint8 image."""
    return predict_proba(model, images, device, normalization=normalization, tta=tta).argmax(dim=1)


def run_proba(run: "Run", images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``predict_proba`` as the run's own evaluation computes it: its input standardisation, test-time
    augmentation and mixed precision, so per-class figures agree with the test accuracy."""
    from .train import autocast

    with autocast(torch.device(device), run.recipe):
        return predict_proba(run.model, images, device, normalization=run.info.normalization, tta=run.recipe.tta)


# ---------------------------------------------------------------------------------------------------------
# Your own image files, and the tutorial's random test images
# ---------------------------------------------------------------------------------------------------------
@dataclass
class FilePrediction:
    """What the network made of one file: its input and probabilities, or why the file could not be used."""

    path: str
    image: torch.Tensor | None = None  # uint8 (C, H, W): the input exactly as the network received it
    probabilities: torch.Tensor | None = None  # (classes,)
    error: str | None = None

    def top(self, classes: Sequence[str], k: int) -> list[tuple[int, str, float]]:
        """The ``k`` most probable (class index, class name, probability), best first."""
        assert self.probabilities is not None
        values, indices = self.probabilities.topk(min(k, len(classes)))
        return [(int(i), classes[int(i)], float(v)) for v, i in zip(values, indices)]

    def to_json(self, classes: Sequence[str], k: int) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = self.top(classes, k)
        return {"path": self.path, "class": top[0][0], "label": top[0][1], "probability": round(top[0][2], 6),
                "top": [{"class": c, "label": label, "probability": round(p, 6)} for c, label, p in top]}

    def describe(self, classes: Sequence[str], k: int) -> str:
        """``path: label p%  label p%  …``, best first."""
        return f"{self.path}: " + "  ".join(f"{label} {p:.1%}" for _, label, p in self.top(classes, k))


def predict_files(run: "Run", paths: Iterable[str | os.PathLike], device: torch.device | str = "cpu",
                  chunk: int = 256) -> Iterator[FilePrediction]:
    """Prepare each file as the run's training data was prepared and predict it, ``chunk`` files at a time.

    A file that cannot be used yields a FilePrediction with ``error`` set, and the rest go on.
    """
    from .images import prepare_file

    paths = iter(paths)
    while batch := [FilePrediction(str(path)) for path in itertools.islice(paths, chunk)]:
        for item in batch:
            try:
                item.image = prepare_file(item.path, run.info.preprocess, run.info.in_shape)
            except CnnlabError as error:
                item.error = str(error)
        ready = [item for item in batch if item.error is None]
        if ready:
            for item, probabilities in zip(ready, run_proba(run, torch.stack([i.image for i in ready]),
                                                                device)):
                item.probabilities = probabilities
        yield from batch


def random_test_predictions(run: "Run", n: int, data_dir: str | os.PathLike | None = None,
                            device: torch.device | str = "cpu", seed: int | None = None) -> tuple[ImageSet, torch.Tensor]:
    """``n`` random images of the run's test set and the class predicted for each (the tutorial's step 10)."""
    from .runs import load_test_set

    test = load_test_set(run, data_dir)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    picked = test.subset(torch.randperm(len(test), generator=generator)[:n])
    return picked, run_proba(run, picked.images, device).argmax(dim=1)
