"""The networks, by name. Every builder takes the input shape (C, H, W) and the number of classes.

Models return logits; the softmax of the tutorial's last layer lives in the loss (and in ``predict``).
The tutorial's networks start as Keras starts them: Glorot-uniform kernels and zero biases.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import CnnlabError

Shape = tuple[int, int, int]  # (channels, height, width)


def keras_init(model: nn.Module) -> nn.Module:
    """Keras's defaults for Dense and Conv2D: Glorot-uniform kernels, zero biases."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)  # fans include the receptive field, as in Keras
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def mlp(in_shape: Shape, num_classes: int) -> nn.Module:
    """Lab 2: Dense(512, relu) → Dense(10)."""
    return keras_init(nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        dense=nn.Linear(math.prod(in_shape), 512),
        relu=nn.ReLU(),
        dense_1=nn.Linear(512, num_classes),
    )))


def _cnn(in_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    channels, height, width = in_shape
    layers = OrderedDict(
        conv2d=nn.Conv2d(channels, 32, 3, padding="same"),
        relu=nn.ReLU(),
        max_pooling2d=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        dense=nn.Linear(32 * (height // 2) * (width // 2), 128),
        relu_1=nn.ReLU(),
    )
    if dropout:
        layers["dropout"] = nn.Dropout(dropout)
    layers["dense_1"] = nn.Linear(128, num_classes)
    return keras_init(nn.Sequential(layers))


def cnn(in_shape: Shape, num_classes: int) -> nn.Module:
    """Lab 3: Conv2D(32, 3×3, same, relu) → MaxPool(2×2) → Dense(128, relu) → Dense(10)."""
    return _cnn(in_shape, num_classes, dropout=0.0)


def cnn_dropout(in_shape: Shape, num_classes: int) -> nn.Module:
    """Lab 4: lab 3's network with Dropout(0.3) after Dense(128)."""
    return _cnn(in_shape, num_classes, dropout=0.3)


def cnn_deep(in_shape: Shape, num_classes: int) -> nn.Module:
    """Lab 5: two 3×3 convolutions (32, 64) → MaxPool → Dense(128) → Dropout(0.3) → Dense(64) → Dropout(0.2)."""
    channels, height, width = in_shape
    return keras_init(nn.Sequential(OrderedDict(
        conv2d=nn.Conv2d(channels, 32, 3, padding="same"),
        relu=nn.ReLU(),
        conv2d_1=nn.Conv2d(32, 64, 3, padding="same"),
        relu_1=nn.ReLU(),
        max_pooling2d=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        dense=nn.Linear(64 * (height // 2) * (width // 2), 128),
        relu_2=nn.ReLU(),
        dropout=nn.Dropout(0.3),
        dense_1=nn.Linear(128, 64),
        relu_3=nn.ReLU(),
        dropout_1=nn.Dropout(0.2),
        dense_2=nn.Linear(64, num_classes),
    )))


MODELS: dict[str, Callable[[Shape, int], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn-dropout": cnn_dropout,
    "cnn-deep": cnn_deep,
}


def create_model(name: str, in_shape: Shape, num_classes: int) -> nn.Module:
    """Build a registered network for images of ``in_shape`` (C, H, W) and ``num_classes`` classes."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise CnnlabError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None
    return builder(tuple(in_shape), num_classes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Summary, as Keras prints it: layer, output shape, parameters
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch axis
    params: int


def trace(model: nn.Module, images: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Each leaf layer's name, module and output (batch axis kept), in the order they ran on ``images``.

    Runs in eval mode without gradients; the model's mode is restored afterwards.
    """
    outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves are listed instead

        def record(module, inputs, output, name=name):
            outputs.append((name, module, output))
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return outputs


def summarize(model: nn.Module, in_shape: Shape) -> list[LayerRow]:
    """One row per leaf layer, found by running one blank image through the model."""
    blank = torch.zeros((1, *in_shape), device=next(model.parameters()).device)
    return [LayerRow(name, type(module).__name__, tuple(output.shape[1:]), sum(p.numel() for p in module.parameters()))
            for name, module, output in trace(model, blank)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
