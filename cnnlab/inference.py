"""Inference: a trained network with everything that stands between an image and its answer — the input rule, the
run's normalisation, its test-time augmentation, its precision — in one object, ``Inference``, that ``evaluate``,
``predict``, ``explain``, the studio's Inside view, ``export`` and both servers compute through.

The input rule, whose home is ``cnnlab.data.check_pixels`` (fit and evaluate keep it too): uint8 pixels 0–255, as
cnnlab's data sets and image preparation give them, and other integers within 0–255 are divided by 255 (the course's
``/ 255``); floats already in [0, 1] are taken as they are; anything else is a one-line CnnlabError that says what
to pass. Images are a batch (N, C, H, W).

A network, a run (``cnnlab.load_run``) or an ``Inference`` may be passed wherever a model is expected: a bare
network is computed as it is (no normalisation, test-time augmentation or mixed precision); a run brings its own.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import engines
from .augment import Normalization, tta_logits
from .data import PIXELS, ArrayLike, Data, as_image_set, check_pixels
from .device import Device, autocast, borrowed, model_device
from .errors import CnnlabError
from .models import check_input, model_outputs, trace
from .recipes import AUTOCASTS, ENGINES, TTA_MODES, Recipe, as_recipe

# What each test-time augmentation averages (cnnlab.augment.tta_logits), in words for the studio and explain.
TTA_PASSES = {
    "none": "one pass: the image as it is",
    "flip": "the mean of the logits of 2 passes: the image as it is and its mirror",
    "flip-translate": "a weighted mean of the logits of 6 passes: the image as it is and its mirror (1/4 each), "
                      "then both moved one pixel up-left and one down-right (1/8 each)",
}


# ---------------------------------------------------------------------------------------------------------
# The input rule
# ---------------------------------------------------------------------------------------------------------
def check_images(images: Any) -> int:
    """A one-line CnnlabError unless ``images`` is a batch (N, C, H, W) whose pixels keep the input rule
    (``cnnlab.data.check_pixels``: uint8 is not looked at, other integers and floats are read once); else what the
    network's input divides them by."""
    if not isinstance(images, torch.Tensor):
        raise CnnlabError(f"images must be a torch tensor (N, C, H, W), not {type(images).__name__}; {PIXELS} "
                          "(torch.from_numpy makes one from an array)")
    if images.ndim != 4:
        one = "; one image (C, H, W) is images[None]" if images.ndim == 3 else ""
        raise CnnlabError(f"images of shape {tuple(images.shape)}: expected a batch (N, C, H, W){one}")
    return check_pixels(images)


def to_input(images: torch.Tensor, normalization: Normalization | None = None) -> torch.Tensor:
    """The network's input for ``images`` by the input rule: float32 in [0, 1] (integer pixels 0–255 / 255, floats
    in [0, 1] as they are), then standardised by the run's ``normalization`` when it has one. The caller's tensor
    is not changed."""
    divisor = check_images(images)
    inputs = images.to(torch.float32, copy=True)  # apply() works in place
    if divisor != 1:
        inputs.div_(divisor)
    return normalization.apply(inputs) if normalization else inputs


# ---------------------------------------------------------------------------------------------------------
# The inference object
# ---------------------------------------------------------------------------------------------------------
class RunLike(Protocol):  # cnnlab.runs.Run, as far as inference reads it (each read when first asked for)
    @property
    def model(self) -> nn.Module: ...

    @property
    def recipe(self) -> Recipe: ...

    @property
    def info(self) -> Any: ...  # cnnlab.runs.ModelInfo: its .normalization


Source = Union[nn.Module, "Inference", RunLike]  # what a function that predicts takes as its model


@dataclass(frozen=True, eq=False)
class Inference:
    """A network and how it answers: images → (the input rule, normalisation) → logits averaged over the test-time
    augmentation's passes, under the run's mixed precision → probabilities. It computes wherever its network is.
    """

    model: nn.Module
    normalization: Normalization | None = None  # the training split's statistics (ModelInfo.normalization)
    tta: str = "none"  # test-time augmentation (Recipe.tta): none, flip, flip-translate
    autocast: str = "off"  # mixed precision (Recipe.autocast): off, bf16, fp16, or auto (bf16 where native)
    engine: str = "plain"  # how a batch is computed (Recipe.engine; cnnlab.engines.forward_fn), never what

    def __post_init__(self) -> None:  # as a recipe checks its fields: an unknown tta was computed as 'none'
        for field, choices in (("tta", TTA_MODES), ("autocast", AUTOCASTS), ("engine", ENGINES)):
            if getattr(self, field) not in choices:
                raise CnnlabError(f"Inference {field}={getattr(self, field)!r}: choose one of {', '.join(choices)}")

    @classmethod
    def of(cls, source: Source, recipe: Recipe | None = None) -> Inference:
        """The inference of a network (as it is), a run (its normalisation, TTA and precision) or an Inference;
        ``recipe`` replaces the TTA, precision and engine with its own."""
        if isinstance(source, Inference):
            inference = source
        elif isinstance(source, nn.Module):
            inference = cls(source)
        elif isinstance(getattr(source, "model", None), nn.Module) and hasattr(source, "info") \
                and hasattr(source, "recipe"):
            inference = cls(source.model, source.info.normalization, source.recipe.tta, source.recipe.autocast)
        else:
            raise CnnlabError(f"expected a network (a torch.nn.Module), a run (cnnlab.load_run) or an Inference, "
                              f"not {type(source).__name__}")
        if recipe is not None:
            inference = replace(inference, tta=recipe.tta, autocast=recipe.autocast, engine=recipe.engine)
        return inference

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def passes(self) -> str:
        """What the logits are the mean of, in words."""
        return TTA_PASSES[self.tta]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for ``images`` (N, C, H, W), on its device: the input rule, then the normalisation."""
        check_images(images)
        check_input(self.model, images.shape[1:])
        return to_input(images.to(self.device), self.normalization)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes), float32, for prepared ``inputs``: averaged over the test-time augmentation's passes,
        under the mixed precision. Gradients flow when ``inputs`` asks for them (saliency)."""
        forward = engines.forward_fn(self.model, inputs.device, self.engine)
        with autocast(inputs.device, self.autocast, training=False):
            return tta_logits(forward, inputs, self.tta).float()

    def proba(self, images: torch.Tensor, device: Device = None, batch_size: int | None = None) -> torch.Tensor:
        """Softmax probabilities (N, classes) on the CPU, ``batch_size`` images at a time, in eval mode on
        ``device`` (None: where the network is); the network goes back where and as it was."""
        check_images(images)
        check_input(self.model, images.shape[1:])
        with torch.no_grad(), borrowed(self.model, device) as device:
            batch_size = eval_batch_size(batch_size, device)
            chunks = [torch.softmax(self.logits(to_input(images[i:i + batch_size].to(device), self.normalization)),
                                    dim=1).cpu()
                      for i in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0)

    def trace(self, image: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, nn.Module, torch.Tensor]],
                                                  torch.Tensor]:
        """For one image (C, H, W): the network's input (1, C, H, W), each layer's output on the image as it is
        (the first of the test-time passes), under the mixed precision, and the logits (1, classes) the answer
        comes from — the last layer's output itself without test-time augmentation, else the passes' mean."""
        with torch.no_grad(), borrowed(self.model):
            inputs = self.prepare(image[None])
            with autocast(inputs.device, self.autocast, training=False):
                layers = trace(self.model, inputs)
            logits = layers[-1][2].float() if self.tta == "none" else self.logits(inputs)
        return inputs, layers, logits


def eval_batch_size(batch_size: Any, device: torch.device) -> int:
    """``batch_size`` as given to ``evaluate`` or ``predict``, or None: the device's own (engines.eval_batch_size)."""
    if batch_size is None:
        return engines.eval_batch_size(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size={batch_size!r}: pass a whole number of images, 1 or more, or leave it out")
    return batch_size


def answer(logits: torch.Tensor) -> torch.Tensor:
    """The probabilities that ``logits`` (classes,) give: what the bars show."""
    return torch.softmax(logits.float(), dim=-1)


# ---------------------------------------------------------------------------------------------------------
# Loss and accuracy over a labelled set: the tutorial's model.evaluate
# ---------------------------------------------------------------------------------------------------------
def loss_fn(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Categorical cross-entropy, mean over the batch; with Keras's probability clipping when ``loss_clip`` > 0."""
    logits = logits.float()  # mixed precision stops at the loss
    # cross_entropy's CUDA kernel has no deterministic version; the sum below has.
    if recipe.loss_clip == 0 and not (logits.is_cuda and torch.are_deterministic_algorithms_enabled()):
        return F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    log_probs = F.log_softmax(logits, dim=1)
    if recipe.loss_clip:
        # Keras computes -log(clip(p, ε, 1-ε)): clamping log p is the same, and its gradient is zero where clipped.
        log_probs = log_probs.clamp(math.log(recipe.loss_clip), math.log1p(-recipe.loss_clip))
    targets = F.one_hot(labels, logits.shape[1]).float()
    if recipe.label_smoothing:
        targets = targets * (1 - recipe.label_smoothing) + recipe.label_smoothing / logits.shape[1]
    return -(targets * log_probs).sum(dim=1).mean()


class Scores(NamedTuple):
    """What ``evaluate`` returns, as Keras's does: ``loss, accuracy = score``, ``score[0]``, ``score[1]``; and by
    name, ``score["loss"]``, as cnnlab's dict was read. Shown to 4 digits; the fields keep every digit."""

    loss: float
    accuracy: float

    def __getitem__(self, key: Any) -> Any:  # a name as well as a position
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:  # so dict(score) and **score give {"loss": …, "accuracy": …}
        return self._fields

    def __repr__(self) -> str:
        return f"Scores(loss={self.loss:.4f}, accuracy={self.accuracy:.4f})"


@torch.inference_mode()
def evaluate(model: Source, data: Data, recipe: Recipe | str | ArrayLike | None = None, device: Device = None,
             batch_size: int | None = None, *, verbose: bool = False) -> Scores:
    """Loss and accuracy over a whole set in eval mode (dropout off), in large batches, with the recipe's loss,
    test-time augmentation, precision and engine (default: the run's own recipe, for a run).

    ``model``: a network, a run (its normalisation too) or an Inference; it computes on ``device`` (None: where
    it is) and goes back where and as it was. ``data``: an ImageSet or Keras's arrays (``as_image_set``);
    Keras's ``evaluate(x, y)`` is ``evaluate(model, x, y, recipe)``, where the labels move the recipe one place
    on and the model computes where it is. ``recipe``: a Recipe or its name.
    ``verbose``: print Keras's closing line (the course passes ``verbose=0``; the result shows itself anyway).
    """
    if isinstance(recipe, (np.ndarray, torch.Tensor, list)):  # evaluate(model, x, y, recipe): y came third
        data, recipe, device = (cast(ArrayLike, data), recipe), cast("Recipe | str | None", device), None
    if recipe is None:
        recipe = getattr(model, "recipe", None)
        if recipe is None:
            raise CnnlabError("evaluate needs the recipe the network was trained with: evaluate(model, data, recipe)")
    recipe = as_recipe(recipe)
    inference = Inference.of(model, recipe)
    dataset = as_image_set(data, in_shape=getattr(inference.model, "in_shape", None), what="evaluate's data")
    check_input(inference.model, dataset.images.shape[1:])
    outputs = model_outputs(inference.model, dataset.images.shape[1:])
    if int(dataset.labels.max()) >= outputs:  # else the loss fails deep inside PyTorch
        raise CnnlabError(f"evaluate's data has label {int(dataset.labels.max())}, the model has {outputs} outputs "
                          f"(classes 0–{outputs - 1}): pass labels of the classes it was built for")
    started = time.perf_counter()
    with borrowed(inference.model, device) as device:
        batch_size = eval_batch_size(batch_size, device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, len(dataset), batch_size):
            inputs = to_input(dataset.images[start:start + batch_size].to(device, non_blocking=True),
                              inference.normalization)
            labels = dataset.labels[start:start + batch_size].to(device, non_blocking=True)
            logits = inference.logits(inputs)
            loss_sum += loss_fn(logits, labels, recipe) * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum()
    scores = Scores(loss_sum.item() / len(dataset), correct.item() / len(dataset))
    if verbose:  # Keras's line, as fit prints each epoch's
        steps = math.ceil(len(dataset) / batch_size)
        print(f"{steps}/{steps} - {time.perf_counter() - started:.1f}s - loss: {scores.loss:.4f} - "
              f"accuracy: {scores.accuracy:.4f}")
    return scores
