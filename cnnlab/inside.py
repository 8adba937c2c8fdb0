"""Inside the network, number by number: every layer's output for one image, and how one value of a convolution's
feature map is made — the input patch under the kernel (zero padding included), the kernel, their products, the
sum plus the bias — then what the activation and the next pooling window do to it.

Everything comes from the run's own weights through its forward pass (``cnnlab.inference.Inference.trace``, in
the run's precision), so what the studio shows equals what ``predict`` computes. The layers show the image as it
is; on a run with test-time augmentation a last entry holds the logits averaged over its passes, which the answer
comes from. The registered networks are chains of layers, so a layer's input is the previous layer's output.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import CnnlabError
from .inference import Inference, Source

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
COMPRESS = 6  # zlib level of the PNGs
ELEMENTWISE = (nn.ReLU, nn.GELU, nn.BatchNorm2d, nn.Dropout)  # in eval mode, each value on its own


@dataclass(frozen=True)
class Activation:
    name: str  # 'input' or the layer's name in the model, e.g. 'conv2d'; 'tta' for test-time augmentation's mean
    kind: str  # the layer's class: 'Conv2d', 'ReLU', … ('Input' for the input, 'Mean' for the mean)
    values: torch.Tensor  # float, without the batch axis: (C, H, W) or (N,)
    note: str = ""  # what the values are, where the name and kind do not say it


def activations(run: Source, image: torch.Tensor) -> list[Activation]:
    """The input as the network receives it (scaled, standardised), then every layer's output, in order; the last
    entry is always the logits the answer comes from (softmax of its values gives the probabilities): the last
    layer's, or on a run with test-time augmentation a 'tta' entry with the mean over its passes.

    ``run``: a run, an Inference or a network; ``image``: uint8 (C, H, W), as ``cnnlab.images.prepare_file``
    makes it.
    """
    inference = Inference.of(run)
    inputs, traced, logits = inference.trace(image)
    layers = [Activation("input", "Input", inputs[0].float().cpu())]
    layers += [Activation(name, type(module).__name__, output[0].float().cpu()) for name, module, output in traced]
    if inference.tta != "none":
        layers.append(Activation("tta", "Mean", logits[0].cpu(), f"the logits the answer comes from: "
                                 f"{inference.passes}; the layers above show the image as it is"))
    return layers


# ---------------------------------------------------------------------------------------------------------
# One value of a feature map, explained
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """What a layer after the convolution did to the value: e.g. ReLU keeps it or makes it 0."""
    name: str
    kind: str
    value: float


@dataclass(frozen=True)
class PoolWindow:
    name: str
    kind: str  # 'MaxPool2d', 'AvgPool2d', …
    top: int  # the window's first row and column in the pooling layer's input
    left: int
    values: list[list[float]]  # the window, (h, w)
    position: tuple[int, int]  # (row, col) of its value in the pooled map
    value: float  # the value the pooling layer kept (max) or made (mean)


@dataclass(frozen=True)
class ValueExplanation:
    layer: str
    channel: int
    row: int
    col: int
    patch: list  # (C, kh, kw): the input under the kernel, 0 where it hangs over the border (padding)
    padded: list  # (kh, kw) booleans: True where the patch lies in the padding
    kernel: list  # (C, kh, kw): the weights of filter ``channel``
    products: list  # (C, kh, kw): patch × kernel
    sum: float  # of the products
    bias: float  # 0 for a convolution without one
    value: float  # the feature map's value at (channel, row, col), from the forward pass
    steps: list[Step]  # the activation (and normalisation) that follow, value by value
    pool: PoolWindow | None  # the pooling window that takes the value, if a pooling layer follows
    has_bias: bool = True  # False for a convolution without one (``bias`` is then 0 and adds nothing)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(top, left) zeros the convolution adds, 'same' and 'valid' included."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":  # PyTorch puts the odd one of an even kernel's padding at the bottom/right
        (dh, dw), (kh, kw) = conv.dilation, conv.kernel_size
        return (dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2
    # The ignore: torch types a convolution's padding as str | tuple[int, ...]; a Conv2d's is a pair.
    return tuple(conv.padding)  # type: ignore[return-value]


def explain_value(run: Source, image: torch.Tensor, layer: str, channel: int, row: int, col: int
                  ) -> ValueExplanation:
    """How the value at (``channel``, ``row``, ``col``) of convolution ``layer``'s output is made from the
    image's activations, and where the next layers take it. In the run's precision: under bf16 the kernel is
    shown as the convolution used it, rounded to bf16, and the sum is rounded once more to give the value."""
    inputs, traced, _ = Inference.of(run).trace(image)
    names = [name for name, _, _ in traced]
    conv = traced[names.index(layer)][1] if layer in names else None
    if not isinstance(conv, nn.Conv2d):
        convs = [name for name, module, _ in traced if isinstance(module, nn.Conv2d)]
        raise CnnlabError(f"layer {layer!r}: not a convolution of this network; choose one of "
                          f"{', '.join(convs) or '(none: it has no convolution)'}")
    index = names.index(layer)
    computed = traced[index][2][0]
    output = computed.float().cpu()  # (K, H, W)
    if not (0 <= channel < output.shape[0] and 0 <= row < output.shape[1] and 0 <= col < output.shape[2]):
        raise CnnlabError(f"({channel}, {row}, {col}): outside {layer}'s output of shape "
                          f"{tuple(output.shape)} (channel, row, column)")
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise CnnlabError(f"layer {layer!r}: grouped or dilated convolutions are not explained")
    # (C, H, W): the chain's previous output, as the convolution took it (under bf16, rounded to bf16)
    source = (inputs if index == 0 else traced[index - 1][2])[0].to(computed.dtype).float().cpu()
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, _padding(conv)
    padded_input = nn.functional.pad(source, (pw, pw + kw, ph, ph + kh))  # generous on the far side: 'same' with even k
    top, left = row * sh, col * sw  # in padded coordinates
    patch = padded_input[:, top:top + kh, left:left + kw]
    rows, cols = torch.arange(top - ph, top - ph + kh), torch.arange(left - pw, left - pw + kw)
    outside = ((rows < 0) | (rows >= source.shape[1]))[:, None] | ((cols < 0) | (cols >= source.shape[2]))[None, :]
    kernel = conv.weight[channel].detach().to(computed.dtype).float().cpu()  # as the convolution used it
    products = patch * kernel
    bias = float(conv.bias[channel].detach().to(computed.dtype)) if conv.bias is not None else 0.0

    steps, pool, current = [], None, output
    for name, module, after in traced[index + 1:]:
        after = after[0].float().cpu()
        if isinstance(module, ELEMENTWISE):
            steps.append(Step(name, type(module).__name__, float(after[channel, row, col])))
            current = after
            continue
        if isinstance(module, POOLS):
            pool = _pool_window(name, module, current[channel], after[channel], row, col)
        break
    return ValueExplanation(layer, channel, row, col, patch.tolist(), outside.tolist(), kernel.tolist(),
                            products.tolist(), float(products.sum()), bias, float(output[channel, row, col]),
                            steps, pool, conv.bias is not None)


def _pool_window(name: str, pool: nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveMaxPool2d | nn.AdaptiveAvgPool2d,
                 before: torch.Tensor, after: torch.Tensor, row: int, col: int
                 ) -> PoolWindow | None:
    """The window of ``pool`` that holds (``row``, ``col``) of its input map ``before`` (H, W); None when the
    windows overlap or leave the pixel out (an odd edge that floor mode drops)."""
    if isinstance(pool, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
        if after.shape[-2:] != (1, 1):
            return None
        size: tuple[int, ...] = before.shape
        stride: tuple[int, ...] = before.shape
    else:
        size = (pool.kernel_size,) * 2 if isinstance(pool.kernel_size, int) else tuple(pool.kernel_size)
        stride = (pool.stride,) * 2 if isinstance(pool.stride, int) else tuple(pool.stride)
        if size != stride or pool.padding not in (0, (0, 0)):
            return None
    out_row, out_col = row // stride[0], col // stride[1]
    if out_row >= after.shape[0] or out_col >= after.shape[1]:
        return None
    top, left = out_row * stride[0], out_col * stride[1]
    window = before[top:top + size[0], left:left + size[1]]
    return PoolWindow(name, type(pool).__name__, top, left, window.tolist(), (out_row, out_col),
                      float(after[out_row, out_col]))


# ---------------------------------------------------------------------------------------------------------
# One value of any layer, explained from that layer's input (the studio's views of each kind of layer)
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()  # the weights are read, not trained
def explain_cell(run: Source, image: torch.Tensor, layer: str, channel: int, row: int = 0, col: int = 0) -> dict:
    """How the value at (``channel``, ``row``, ``col``) of ``layer``'s output — (``channel``,) of a vector — is
    made from the layer's input, as JSON: a convolution as ``explain_value`` explains it; ReLU, GELU, Dropout
    and scaling value by value; BatchNorm with the statistics and weights it applies; a pooling window; where
    Flatten took the value from; a Dense unit's weighted sum and its largest terms."""
    from .models import Mul

    inputs, traced, _ = Inference.of(run).trace(image)
    names = [name for name, _, _ in traced]
    if layer not in names:
        raise CnnlabError(f"layer {layer!r}: not a layer of this network; choose one of {', '.join(names)}")
    index = names.index(layer)
    module, source_name = traced[index][1], names[index - 1] if index else "input"
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d):
        return {"kind": kind, "source": source_name, "stride": list(module.stride), "padding": list(_padding(module)),
                **explain_value(run, image, layer, channel, row, col).to_json()}
    output = traced[index][2][0].float().cpu()
    source = (inputs if index == 0 else traced[index - 1][2])[0].float().cpu()  # the chain's previous output
    at = (channel,) if output.ndim == 1 else (channel, row, col)
    if output.ndim not in (1, 3) or not all(0 <= i < n for i, n in zip(at, output.shape)):
        raise CnnlabError(f"{at}: outside {layer}'s output of shape {tuple(output.shape)}")
    cell = {"layer": layer, "kind": kind, "channel": channel, "row": row, "col": col, "value": float(output[at]),
            "source": source_name}
    if isinstance(module, (nn.ReLU, nn.GELU, nn.Dropout, Mul)) and source.shape == output.shape:
        return {**cell, "before": float(source[at]), **({"scale": module.scale} if isinstance(module, Mul) else {})}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_mean is not None:
        affine, mean, var = module.weight is not None, module.running_mean, module.running_var
        return {**cell, "before": float(source[at]), "mean": float(mean[channel]),
                "var": float(var[channel]) if var is not None else 1.0, "eps": module.eps,
                "weight": float(module.weight[channel]) if affine else 1.0,
                "bias": float(module.bias[channel]) if affine else 0.0}
    if isinstance(module, nn.Flatten) and output.ndim == 1:
        origin = np.unravel_index(channel, tuple(source.shape))
        return {**cell, "from": [int(i) for i in origin], "before": float(source[tuple(origin)])}
    if isinstance(module, nn.Linear):
        terms = source.reshape(-1) * module.weight[channel].float().cpu()
        largest = terms.abs().argsort(descending=True)[:5].tolist()
        return {**cell, "count": len(terms), "sum": float(terms.sum()),
                "bias": float(module.bias[channel]) if module.bias is not None else 0.0,
                "has_bias": module.bias is not None,
                "top": [{"index": i, "input": float(source.reshape(-1)[i]), "weight": float(module.weight[channel, i]),
                         "product": float(terms[i])} for i in largest]}
    window = _window(module, (source.shape[-2], source.shape[-1]), row, col) if output.ndim == 3 else None
    if window is not None:
        (top, left), (height, width) = window
        rows, cols = torch.arange(top, top + height), torch.arange(left, left + width)
        outside = ((rows < 0) | (rows >= source.shape[1]))[:, None] | ((cols < 0) | (cols >= source.shape[2]))[None, :]
        values = source[channel][rows.clamp(0, source.shape[1] - 1)][:, cols.clamp(0, source.shape[2] - 1)]
        return {**cell, "top": top, "left": left, "window": values.masked_fill(outside, 0).tolist(),
                "padded": outside.tolist(), "include_padding": bool(getattr(module, "count_include_pad", False))}
    raise CnnlabError(f"layer {layer!r} ({kind}): its values are not explained here")


def _window(pool: nn.Module, size: tuple[int, int], row: int, col: int
            ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(top, left) and (height, width) of the window that ``pool`` turns into its output's (``row``, ``col``),
    on an input map of ``size``; the top and left lie above and left of 0 in the padding. None for the
    pooling it does not describe (dilated, adaptive to more than one value)."""
    from .models import GlobalMaxPool

    if isinstance(pool, GlobalMaxPool) or (isinstance(pool, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d))
                                           and pool.output_size in (1, (1, 1))):
        return (0, 0), size
    if not isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d)) or getattr(pool, "dilation", 1) not in (1, (1, 1)):
        return None
    (kh, kw), (sh, sw), (ph, pw) = (_pair(v) for v in (pool.kernel_size, pool.stride, pool.padding))
    return (row * sh - ph, col * sw - pw), (kh, kw)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


# ---------------------------------------------------------------------------------------------------------
# Compact pictures of the numbers: uint8 PNGs with their range
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantised:
    png: bytes  # grey, 8 bits: (H, W) as it is, (C, H, W) as C maps stacked downwards (C·H, W), (N,) as (1, N)
    low: float  # the value that 0 stands for
    high: float  # the value that 255 stands for

    def to_json(self) -> dict:
        import base64

        return {"png": base64.b64encode(self.png).decode(), "low": self.low, "high": self.high}


def quantise(values: torch.Tensor) -> Quantised:
    """``values`` (C, H, W), (H, W) or (N,) as a grey PNG, 0 to 255 spanning their own range."""
    from PIL import Image

    array = values.detach().float().cpu().numpy()  # numpy, one thread: torch's small ops stall on a busy machine
    low, high = float(array.min()), float(array.max())
    grid = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)
    scaled = np.rint((grid - low) * (255 / (high - low))) if high > low else np.zeros_like(grid)
    buffer = io.BytesIO()
    Image.fromarray(scaled.astype(np.uint8)).save(buffer, format="PNG", compress_level=COMPRESS)
    return Quantised(buffer.getvalue(), low, high)

