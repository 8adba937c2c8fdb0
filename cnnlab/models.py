"""The networks, by name. Every builder takes the input shape (C, H, W) and the number of classes.

Models return logits; the softmax of the tutorial's last layer lives in the loss (and in ``predict``).
The tutorial's networks start as Keras starts them: Glorot-uniform kernels and zero biases.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .device import model_device
from .errors import CnnlabError, hint

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


# ---------------------------------------------------------------------------------------------------------
# Beyond the tutorial: BatchNorm networks that train fast
# ---------------------------------------------------------------------------------------------------------
def bn_cnn(in_shape: Shape, num_classes: int, widths: tuple[int, ...] = (32, 64, 128), hidden: int = 256) -> nn.Module:
    """A small BatchNorm CNN that trains fast on a CPU: blocks of 3×3 conv → 2×2 max-pool → BatchNorm → ReLU,
    the later ones followed by a second 3×3 conv → BatchNorm → ReLU at the pooled size (airbench's conv
    group), then Dense(256) → BatchNorm → ReLU → Dense. Pooling before the norm leaves only the first
    convolution at full size. 576k parameters, 10.9 M multiply-adds per 28×28 image."""
    channels, height, width = in_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (width_in, width_out) in enumerate(zip((channels, *widths), widths), start=1):
        layers.update({f"conv{i}": nn.Conv2d(width_in, width_out, 3, padding=1, bias=False),
                       f"pool{i}": nn.MaxPool2d(2), f"norm{i}": nn.BatchNorm2d(width_out), f"relu{i}": nn.ReLU()})
        if i > 1:
            layers.update({f"conv{i}b": nn.Conv2d(width_out, width_out, 3, padding=1, bias=False),
                           f"norm{i}b": nn.BatchNorm2d(width_out), f"relu{i}b": nn.ReLU()})
    scale = 2 ** len(widths)
    layers.update(flatten=nn.Flatten(),
                  dense=nn.Linear(widths[-1] * (height // scale) * (width // scale), hidden, bias=False),
                  dense_norm=nn.BatchNorm1d(hidden), dense_relu=nn.ReLU(), dense_1=nn.Linear(hidden, num_classes))
    return nn.Sequential(layers)


class Mul(nn.Module):
    """Multiplies by a fixed number (airbench scales its logits by 1/9)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class GlobalMaxPool(nn.Module):
    """The maximum over each channel's whole map, (N, C, H, W) → (N, C, 1, 1): ``AdaptiveMaxPool2d(1)``'s
    numbers and gradients (ties go to the first maximum), computed by ``max_pool2d`` with the map as its
    window, whose CUDA backward is deterministic; AdaptiveMaxPool2d's raises under ``--deterministic``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, x.shape[-2:])


def _airbench_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3×3, no bias, and the first filters start as the identity, so a fresh stack passes its input through."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


def _airbench_norm(channels: int) -> nn.BatchNorm2d:
    """airbench's BatchNorm: a fixed scale of 1, a learnt shift, momentum 0.6 in its sense (0.4 in PyTorch's)."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def _conv_group(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv → pool → norm → GELU → conv → norm → GELU: pooling before the norm halves the work after it."""
    return nn.Sequential(OrderedDict(
        conv1=_airbench_conv(in_channels, out_channels), pool=nn.MaxPool2d(2), norm1=_airbench_norm(out_channels),
        act1=nn.GELU(), conv2=_airbench_conv(out_channels, out_channels), norm2=_airbench_norm(out_channels),
        act2=nn.GELU(),
    ))


class AirbenchNet(nn.Sequential):
    """airbench94's network (Keller Jordan, 2024): a frozen 2×2 patch-whitening convolution, three conv groups
    and a linear head on the global max. ``init_from_data`` sets the whitening from training images."""

    whiten: nn.Conv2d  # the first layer, by name

    def __init__(self, in_shape: Shape, num_classes: int, widths: tuple[int, int, int] = (64, 256, 256)):
        channels = in_shape[0]
        whiten_width = 2 * channels * 2 * 2  # every 2×2 patch direction, and its negative
        super().__init__(OrderedDict(
            whiten=nn.Conv2d(channels, whiten_width, 2, padding=0, bias=True),
            act=nn.GELU(),
            group1=_conv_group(whiten_width, widths[0]),
            group2=_conv_group(widths[0], widths[1]),
            group3=_conv_group(widths[1], widths[2]),
            pool=GlobalMaxPool(),  # airbench's MaxPool2d(3) on the last 3×3 map
            flatten=nn.Flatten(),
            head=nn.Linear(widths[2], num_classes, bias=False),
            scale=Mul(1 / 9),
        ))
        assert self.whiten.bias is not None  # made with bias=True
        nn.init.zeros_(self.whiten.bias)
        self.whiten.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, inputs: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening filters from the eigenvectors of the 2×2 patch covariance of ``inputs`` (N, C, H, W)."""
        channels, size = inputs.shape[1], self.whiten.kernel_size[0]
        patches = (inputs.float().unfold(2, size, 1).unfold(3, size, 1)  # (N, C, H', W', 2, 2)
                   .permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * size * size))
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0)
        filters = filters.reshape(-1, channels, size, size)
        self.whiten.weight.copy_(torch.cat((filters, -filters)).to(self.whiten.weight))


def airbench(in_shape: Shape, num_classes: int) -> nn.Module:
    """airbench94's widths (64, 256, 256): 94% on CIFAR-10 in its own recipe."""
    return AirbenchNet(in_shape, num_classes)


def airbench_wide(in_shape: Shape, num_classes: int) -> nn.Module:
    """airbench's network at twice the first width and more after it (128, 384, 512), for longer runs."""
    return AirbenchNet(in_shape, num_classes, widths=(128, 384, 512))


MODELS: dict[str, Callable[[Shape, int], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn-dropout": cnn_dropout,
    "cnn-deep": cnn_deep,
    "bn-cnn": bn_cnn,
    "airbench": airbench,
    "airbench-wide": airbench_wide,
}


def input_shape(shape: Sequence[int]) -> Shape:
    """``shape`` as cnnlab's (channels, height, width). Keras's channels-last ``input_shape`` — two equal sides,
    then 1 or 3 channels, as (28, 28, 1) — cannot be meant otherwise and is turned round; anything else that is
    not three positive integers is a one-line CnnlabError naming the shape to pass."""
    given = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else ()
    if not given or not all(isinstance(side, numbers.Integral) and not isinstance(side, bool) and int(side) > 0
                            for side in given):
        raise CnnlabError(f"in_shape {shape!r}: expected (channels, height, width), e.g. (1, 28, 28)")
    sides = tuple(map(int, given))
    if len(sides) == 3:
        height, width, channels = sides
        if channels in (1, 3) and height == width and height not in (1, 3):  # (1, 28, 28) read either way is itself
            return channels, height, width
        return sides[0], sides[1], sides[2]
    side = math.isqrt(sides[0]) if len(sides) == 1 else 0
    suggestion = (1, *sides) if len(sides) == 2 else (1, side, side) if side * side == sides[0] else (1, 28, 28)
    raise CnnlabError(f"in_shape {given}: input_shape is (channels, height, width) in cnnlab: pass {suggestion}")


MAX_PARAMS = 500_000_000  # 2 GB of float32 weights, about 8 GB to train with Adam; 64×64 colour images take 6.3 M
#                            (the MLP), and a dense layer over the whole image grows with its pixels


def create_model(name: str, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build a registered network for images of ``in_shape`` (C, H, W) and ``num_classes`` classes; Keras's
    channels-last (28, 28, 1) is read as (1, 28, 28) (``input_shape``).

    Built on PyTorch's meta device first (no memory, no random draws): one of over MAX_PARAMS parameters, or
    with a layer left empty by images its pooling shrinks to nothing, is refused in one line; so is a shape that
    one blank image (eval mode: nothing in the network changes) cannot pass. Not when it is itself built on the
    meta device: cnnlab.runs checks a run folder's shapes so, and names the file at fault."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise CnnlabError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise CnnlabError(f"num_classes={num_classes!r}: pass the number of classes, a whole number 1 or more")
    num_classes = int(num_classes)
    shape = input_shape(in_shape)
    if torch.get_default_device().type == "meta":
        return _as_built(builder(shape, num_classes), shape)
    resize = hint(cli="--size", python="size=")
    too_small = CnnlabError(f"{name} cannot take images as small as {_shape_text(shape)}: its layers shrink them "
                            f"below one pixel; use larger images ({resize}) or another model")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a layer with no inputs warns as it is made: refused below
        probe = builder(shape, num_classes)
    params = count_params(probe)
    if params > MAX_PARAMS:
        raise CnnlabError(f"{name} for {_shape_text(shape)} images would have {params:,} parameters, more than the "
                          f"{MAX_PARAMS:,} cnnlab builds; use smaller images ({resize}) or a model whose size does "
                          "not grow with the image's (airbench)")
    if any(p.numel() == 0 for p in probe.parameters()):
        raise too_small
    model = builder(shape, num_classes)
    try:  # on the real network: a forward pass on the meta device would import torch._dynamo and Triton
        _blank_output(model, shape)
    except CnnlabError:
        raise too_small from None
    return _as_built(model, shape)


def _as_built(model: nn.Module, shape: Shape) -> nn.Module:
    # What check_input and summarize read: a plain attribute, so not a weight, not in the state_dict, and kept
    # by load_state_dict. The ignore: torch types a module's attributes as Tensor | Module (its __getattr__),
    # though any value may be set as a plain attribute.
    model.in_shape = shape  # type: ignore[assignment]
    return model


def head_name(model: nn.Module) -> str:
    """The name of the output layer, the last Linear: what a run started from another's makes new for its classes."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def check_input(model: nn.Module, image_shape: Sequence[int], logits: bool = True) -> None:
    """A one-line CnnlabError unless ``model`` takes images of ``image_shape`` (C, H, W), before any step runs.

    A model from ``create_model`` knows its input shape; any other is tried on one blank image (eval mode, no
    gradients: no weight, statistic or random state changes), and must answer it with ``logits`` (1, classes)
    unless told otherwise (``summarize`` lists the layers of any network). Its weights must be float32.
    """
    image_shape = tuple(image_shape)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if dtype != torch.float32:  # its input is float32 (cnnlab.inference.to_input): PyTorch refuses the pair
        raise CnnlabError(f"the model's weights are {str(dtype).removeprefix('torch.')}; cnnlab feeds it float32 "
                          "and takes mixed precision from the recipe's autocast: call model.float() first")
    expected = getattr(model, "in_shape", None)
    if len(image_shape) != 3:  # a (1, H, W) blank would pass as one unbatched image: say what is missing instead
        add = f": images[:, None] is (N, 1, {image_shape[0]}, {image_shape[1]})" if len(image_shape) == 2 else ""
        raise CnnlabError(f"images of {_shape_text(image_shape)} have no channel axis; pass (N, C, H, W){add}")
    if expected is not None:
        if tuple(expected) == image_shape:
            return
        channels, height, width = expected
        fix = ("the data is channels-last: images.permute(0, 3, 1, 2) is (N, C, H, W)"
               if image_shape == (height, width, channels) else
               f"build it with create_model(name, {image_shape}, classes) or pass data of its shape")
        raise CnnlabError(f"model expects {_shape_text(expected)} images, the data has {_shape_text(image_shape)}; "
                          f"{fix}")
    _blank_output(model, image_shape, logits)


def _blank(model: nn.Module, image_shape: Sequence[int]) -> torch.Tensor:
    """One black image (1, C, H, W) where ``model``'s weights are (the CPU for a network without any)."""
    parameter = next(model.parameters(), None)
    return torch.zeros((1, *image_shape), device=parameter.device if parameter is not None else "cpu")


def _blank_output(model: nn.Module, image_shape: Sequence[int], logits: bool = True) -> torch.Tensor:
    """The model's output for one blank image, in eval mode without gradients (nothing in the model changes);
    a shape it cannot take, or with ``logits`` an output that is not (1, classes), is a one-line CnnlabError."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(_blank(model, image_shape))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        first = next((module for module in model.modules() if not list(module.children())), None)
        fix = ("cnnlab passes images (N, C, H, W): start the network with nn.Flatten(), as Keras's Flatten() "
               "layer" if isinstance(first, nn.Linear) else "pass images of the shape it was built for")
        raise CnnlabError(f"the model cannot take the data's {_shape_text(image_shape)} images ({reason}); {fix}"
                          ) from None
    finally:
        model.train(was_training)
    if logits and (not isinstance(output, torch.Tensor) or output.ndim != 2):  # a tuple, a dict, one number an image
        given = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise CnnlabError(f"the model's forward returns {given} for one image, not logits (1, classes): "
                          "return one tensor (N, classes), its raw scores before the softmax")
    return output


def model_outputs(model: nn.Module, image_shape: Sequence[int]) -> int:
    """How many classes ``model`` scores: a network from ``create_model`` is read, not run (its last Linear is its
    head, and stays last when replaced in place); any other is tried on one blank image."""
    heads = [module.out_features for module in model.modules() if isinstance(module, nn.Linear)]
    if getattr(model, "in_shape", None) is not None and heads:
        return heads[-1]
    return _blank_output(model, image_shape).shape[-1]


def check_trainable(model: object) -> None:
    """A one-line CnnlabError unless ``model`` is a network with weights that learn, before ``fit`` moves it."""
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"fit trains a network (a torch.nn.Module), not {type(model).__name__}: build one with "
                          "cnnlab.create_model(name, in_shape, classes)")
    model_device(model)  # weights on the meta device are refused there
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise CnnlabError(f"the model ({type(model).__name__}) has no weights that learn (none, or all frozen with "
                          "requires_grad_(False)): give it layers with parameters, or unfreeze some")


def check_classes(model: nn.Module, image_shape: Sequence[int], classes: int) -> None:
    """A one-line CnnlabError unless ``model`` gives one output per class (``model_outputs``): too few fail deep
    inside the loss, too many train without a word."""
    outputs = model_outputs(model, image_shape)
    if outputs != classes:
        shape = getattr(model, "in_shape", tuple(image_shape))
        # Class numbers say no more classes than the largest label: a sample that lacks the last ones says them one-hot
        absent = (f"; or, if the labels lack the last classes, pass them one-hot: cnnlab.to_categorical(labels, "
                  f"{outputs})" if outputs > classes else "")
        raise CnnlabError(f"the model has {outputs} outputs but the data has {classes} classes; build it with "
                          f"create_model(name, {shape}, {classes}){absent}")


# ---------------------------------------------------------------------------------------------------------
# Summary, as Keras prints it: layer, output shape, parameters
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch axis
    params: int

    def cells(self) -> tuple[str, str, str]:
        """Keras's three columns: layer (type), output shape, parameters."""
        return f"{self.name} ({self.kind})", str((None, *self.output_shape)), f"{self.params:,}"


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


class Summary(list):
    """``summarize``'s rows (a list of LayerRow) with the model's parameter counts: Keras's summary table when
    printed, and as HTML in Jupyter."""

    HEADER = ("Layer (type)", "Output Shape", "Param #")

    def __init__(self, rows: Iterable[LayerRow], total: int, trainable: int):
        super().__init__(rows)
        self.total, self.trainable = total, trainable

    def counts(self) -> list[str]:
        return [f"Total params: {self.total:,}", f"Trainable params: {self.trainable:,}",
                f"Non-trainable params: {self.total - self.trainable:,}"]

    def __str__(self) -> str:
        cells = [self.HEADER, *(row.cells() for row in self)]
        widths = [max(len(row[i]) for row in cells) + 3 for i in range(3)]
        lines = [" " + "".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
        rule = "_" * (sum(widths) + 1)
        return "\n".join([rule, lines[0], "=" * len(rule), *lines[1:], "=" * len(rule), *self.counts(), rule])

    def _repr_html_(self) -> str:
        from .display import table

        return table(self.HEADER, [row.cells() for row in self]) + f"<p>{'<br>'.join(self.counts())}</p>"


def summarize(model: nn.Module, in_shape: Sequence[int] | None = None) -> Summary:
    """One row per leaf layer, found by running one blank image of ``in_shape`` (C, H, W; Keras's (H, W, C) as
    ``input_shape`` reads it) through the model; left out, the shape the model was built for (``create_model``).
    A shape it cannot take is a one-line CnnlabError."""
    if in_shape is None:
        in_shape = getattr(model, "in_shape", None)
        if in_shape is None:
            raise CnnlabError("summarize needs the input shape of a model not built by create_model: "
                              "summarize(model, (1, 28, 28))")
    shape = input_shape(in_shape)
    check_input(model, shape, logits=False)
    rows = [LayerRow(name, type(module).__name__, tuple(output.shape[1:]), sum(p.numel() for p in module.parameters()))
            for name, module, output in trace(model, _blank(model, shape))]
    return Summary(rows, count_params(model), sum(p.numel() for p in model.parameters() if p.requires_grad))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
