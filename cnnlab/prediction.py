"""Prediction: class probabilities for images, as the tutorial's softmax gave them, and for image files.

Everything computes through ``cnnlab.inference.Inference``: the input rule (uint8 0–255, or floats in [0, 1];
``cnnlab.data.check_pixels``), a run's normalisation, test-time augmentation and precision. ``model`` may be a
network, a run or an Inference.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch
from torch import nn

from .data import Data, ImageSet, as_images
from .device import Device
from .errors import CnnlabError
from .inference import Inference, Source

if TYPE_CHECKING:
    from .runs import Run


@overload
def predict_proba(model: Source, images: np.ndarray | tuple[np.ndarray, Any], device: Device = None,
                  batch_size: int | None = None, *, verbose: int | bool = 0) -> np.ndarray:
    ...


@overload
def predict_proba(model: Source, images: torch.Tensor | ImageSet | tuple[torch.Tensor, Any], device: Device = None,
                  batch_size: int | None = None, *, verbose: int | bool = 0) -> torch.Tensor:
    ...


def predict_proba(model: Source, images: Data, device: Device = None,
                  batch_size: int | None = None, *, verbose: int | bool = 0) -> torch.Tensor | np.ndarray:
    """Softmax probabilities (N, classes) on the CPU for images (N, C, H, W): uint8 0–255, or floats in [0, 1] —
    what Keras's ``model.predict`` returns, and as Keras, a NumPy array for NumPy images. Keras's arrays are laid
    out as ``as_images`` says (channels-last, grey, flat rows); an ImageSet or an (images, labels) tuple gives its
    images.

    ``model``: a network (computed as it is), a run (with its normalisation, test-time augmentation and
    precision) or an Inference. It computes on ``device`` (None: where it is) in eval mode, and is left where and
    as it was. ``verbose`` is taken for Keras's ``predict(x, verbose=0)``; nothing is printed either way.
    """
    return _probabilities(model, images, device, batch_size)


@overload
def predict(model: Source, images: np.ndarray | tuple[np.ndarray, Any], device: Device = None,
            batch_size: int | None = None, *, verbose: int | bool = 0) -> np.ndarray:
    ...


@overload
def predict(model: Source, images: torch.Tensor | ImageSet | tuple[torch.Tensor, Any], device: Device = None,
            batch_size: int | None = None, *, verbose: int | bool = 0) -> torch.Tensor:
    ...


def predict(model: Source, images: Data, device: Device = None,
            batch_size: int | None = None, *, verbose: int | bool = 0) -> torch.Tensor | np.ndarray:
    """The most probable class (N,) for each image, as ``predict_proba`` finds it (NumPy for NumPy images)."""
    return _probabilities(model, images, device, batch_size).argmax(1)


def _probabilities(model: Source, images: Data, device: Device, batch_size: int | None) -> torch.Tensor | np.ndarray:
    inference = Inference.of(model)
    in_shape = getattr(inference.model, "in_shape", None)
    probabilities = inference.proba(as_images(images, in_shape, "predict's data"), device, batch_size)
    given = images[0] if isinstance(images, tuple) else images
    return probabilities if isinstance(given, (torch.Tensor, ImageSet)) else probabilities.numpy()


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
        if self.probabilities is None:
            raise CnnlabError(f"{self.path}: no prediction, the file could not be used "
                              f"({self.error or 'it was not predicted'})")
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


def predict_files(run: Run | str | os.PathLike, paths: Iterable[str | os.PathLike] | str | os.PathLike,
                  device: Device = None, chunk: int = 256) -> Iterator[FilePrediction]:
    """Prepare each file as the run's training data was prepared and predict it, ``chunk`` files at a time.

    ``run``: a run or its folder (a bare network does not say how its images were prepared); ``paths``: files,
    or one file. A file that cannot be used yields a FilePrediction with ``error`` set, and the rest go on.
    """
    from .images import prepare_file
    from .runs import load_run

    if isinstance(run, nn.Module):
        raise CnnlabError("predict_files needs a run, which says how its images were prepared, not a network: "
                          "pass cnnlab.load_run(run_dir), or cnnlab.predict(model, images) for arrays")
    run = load_run(run)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:  # islice(paths, 0) would end at once
        raise CnnlabError(f"chunk={chunk!r}: pass how many files to predict at a time, 1 or more")
    if isinstance(paths, (str, os.PathLike)):  # one file, not its path's characters
        paths = [paths]
    paths = iter(paths)
    while batch := [FilePrediction(str(path)) for path in itertools.islice(paths, chunk)]:
        for item in batch:
            try:
                item.image = prepare_file(item.path, run.info.preprocess, run.info.in_shape)
            except CnnlabError as error:
                item.error = str(error)
        ready = [item for item in batch if item.image is not None and item.error is None]
        if ready:
            images = torch.stack([item.image for item in ready if item.image is not None])
            for item, probabilities in zip(ready, predict_proba(run, images, device)):
                item.probabilities = probabilities
        yield from batch


def random_test_predictions(run: Run, n: int, data_dir: str | os.PathLike | None = None,
                            device: Device = None, seed: int | None = None) -> tuple[ImageSet, torch.Tensor]:
    """``n`` random images of the run's test set and the class predicted for each (the tutorial's step 10)."""
    from .runs import load_test_set

    test = load_test_set(run, data_dir)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    picked = test.subset(torch.randperm(len(test), generator=generator)[:n])
    return picked, predict(run, picked.images, device)
