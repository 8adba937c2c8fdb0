"""The engines: how a training step is computed, never what. The recipe's ``engine`` picks one.

- ``plain``: the model's modules as written, PyTorch's defaults; the reference the others must match.
- ``fast`` (the default): the same sums with fewer passes over memory. On the CPU the first block of
  the one-convolution networks — Conv2D(3×3, same) → ReLU → MaxPool(2×2) — is one matrix product (below),
  other ReLU → MaxPool pairs pool first, and convolutional networks are channels-last; the optimiser is
  PyTorch's fused kernel where it has one; on CUDA matrix products use TF32, as TensorFlow does, and
  evaluation runs in large batches.
- ``graph``: ``fast``, with each full training batch replayed as one CUDA graph (CUDA only).

The fused block: each pooled output depends on a 4×4 window of the image, so the four convolution
outputs of a 2×2 pooling window come from one column of 4×4 patches times the kernel placed at the
window's four offsets. The maximum of the four, plus the bias, through ReLU is the block's output;
its backward pass computes only the kernel's and bias's gradients (the images need none) and sends
each gradient to the offset that won the maximum, as max-pooling does. ``forward_fn`` reads the
parameters from ``model.conv2d`` and runs the model's own later layers, so weights, state dicts and
run folders are those of the plain model.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.torch_version import TorchVersion

from .device import pick_autocast
from .recipes import Recipe, graph_blocker

OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) in a 2×2 pooling window, in max-pooling's scan order


def window_patches(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (C·16, N·H/2·W/2): the zero-padded 4×4 window under each 2×2 pooling cell, one per column."""
    n, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1))  # the 'same' convolution's zero border
    s_n, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided((c, 4, 4, n, h // 2, w // 2), (s_c, s_h, s_w, s_n, 2 * s_h, 2 * s_w))
    return windows.reshape(c * 16, n * (h // 2) * (w // 2))  # rows (c, dy, dx); columns (n, i, j)


def window_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) → (4·K, C·16): the kernel placed at each offset of the pooling window, in a 4×4 frame."""
    placed = [F.pad(weight, (dx, 1 - dx, dy, 1 - dy)) for dy, dx in OFFSETS]  # each (K, C, 4, 4)
    return torch.stack(placed).flatten(2).flatten(0, 1)  # rows (offset, k)


class _MaxOfFour(torch.autograd.Function):
    """relu(bias + the maximum over the four offsets of kernel @ patches), and its kernel and bias gradients.

    Every step is plain float arithmetic on whole tensors: comparisons written into float tensors and
    products with them, because boolean masks, ``where`` and ``masked_fill`` are several times slower here.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, patches: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        top_left, top_right, bottom_left, bottom_right = (kernel @ patches).view(4, -1, patches.shape[1])  # (K, M)
        top = torch.maximum(top_left, top_right)
        bottom = torch.maximum(bottom_left, bottom_right)
        # Which one wins, 1.0 or 0.0; a tie goes to the earlier in max-pooling's scan order, as it does there.
        right_on_top, right_below, below = torch.empty((3, *top.shape), dtype=top.dtype, device=top.device)
        torch.gt(top_right, top_left, out=right_on_top)
        torch.gt(bottom_right, bottom_left, out=right_below)
        torch.gt(bottom, top, out=below)
        out = torch.maximum(top, bottom).add_(bias[:, None]).relu_()  # max(a) + b = max(a + b); ReLU commutes with max
        ctx.save_for_backward(patches, right_on_top, right_below, below, out)
        return out  # (K, M)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # under the forward's autocast, so both products share a dtype
    def backward(ctx, grad_out: torch.Tensor):
        patches, right_on_top, right_below, below, out = ctx.saved_tensors
        grad = grad_out * out.sign()  # ReLU's gradient: out is 0 or positive
        grad_conv = torch.empty((4, *grad.shape), dtype=grad.dtype, device=grad.device)  # per offset, as kernel's rows
        top_left, top_right, bottom_left, bottom_right = grad_conv
        torch.mul(grad, below, out=bottom_left)  # the bottom pair's share, for now
        torch.sub(grad, bottom_left, out=top_left)  # the top pair's share, for now
        torch.mul(top_left, right_on_top, out=top_right)
        top_left.sub_(top_right)
        torch.mul(bottom_left, right_below, out=bottom_right)
        bottom_left.sub_(bottom_right)
        return None, grad_conv.flatten(0, 1) @ patches.t(), grad.sum(1)


def conv_relu_pool(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """max_pool2d(relu(conv2d(images, weight, bias, padding=1)), 2) for images that need no gradient.

    ``chunk`` images at a time, so that a piece's four convolution planes (3.2 MB for 32 images of
    28×28 and 32 kernels) are read back while still in cache: measured 8% off a whole Fashion-MNIST
    step on one core against a single piece of 128 images (16 images did as well, 8 worse).
    """
    n, _, h, w = images.shape
    kernel = window_kernel(weight)
    train = torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad)
    pieces = []
    for part in images.split(chunk):
        patches = window_patches(part)
        if train:
            out = _MaxOfFour.apply(patches, kernel, bias)
        else:  # evaluation: no winners to remember
            out = (kernel @ patches).view(4, -1, patches.shape[1]).amax(0).add_(bias[:, None]).relu_()
        pieces.append(out.view(-1, len(part), h // 2, w // 2).transpose(0, 1))  # (K, n·h·w) → (n, K, h, w)
    return torch.cat(pieces)  # (N, K, H/2, W/2), the plain layout


def fusable(model: nn.Module) -> bool:
    """Does the model open with Conv2d(3×3, same, stride 1, bias) → ReLU → MaxPool2d(2)?"""
    layers = list(model.children())[:3] if isinstance(model, nn.Sequential) else []
    if len(layers) < 3:
        return False
    conv, relu, pool = layers
    pair = (lambda value, one: value in (one, (one, one)))  # PyTorch keeps these as an int or a pair
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding in ("same", (1, 1)) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is not None and conv.padding_mode == "zeros"
            and isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d) and pair(pool.kernel_size, 2)
            and pair(pool.stride, 2) and pair(pool.padding, 0) and pair(pool.dilation, 1) and not pool.ceil_mode)


def pool_before_relu(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with every ReLU → MaxPool2d pair run as MaxPool2d → ReLU.

    Both are monotone, so the outputs are the same numbers, and so are the gradients: a window whose maximum
    is positive sends its gradient to the same winner either way, one whose maximum is not sends none. The
    ReLU and its backward pass then touch a quarter of the elements, and on channels-last tensors PyTorch's
    ReLU → pool pair also costs two layout copies a step (measured on lab 5's network: 185 → 126 ms a step).
    """
    layers = list(layers)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


def forward_fn(model: nn.Module, device: torch.device, engine: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's forward; on the CPU with the fast engines, the same sums in fewer passes over memory: the
    first block fused where it can be, pooling before ReLU elsewhere."""
    if engine == "plain" or device.type != "cpu" or not isinstance(model, nn.Sequential):
        return model  # on a GPU the library kernels are already few and fast
    layers = pool_before_relu(list(model.children()))
    head = fusable(model)
    if not head and layers == list(model.children()):
        return model  # nothing to change (the MLP)
    conv = layers[0]

    def forward(images: torch.Tensor) -> torch.Tensor:
        # The fused block gives no image gradient (saliency asks for one) and pools even sizes only.
        if head and not images.requires_grad and images.shape[-1] % 2 == 0 and images.shape[-2] % 2 == 0:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None  # as fusable() checked
            images, rest = conv_relu_pool(images, conv.weight, conv.bias), layers[3:]
        else:
            rest = layers
        for layer in rest:
            images = layer(images)
        return images
    return forward


def memory_format(model: nn.Module, device: torch.device, engine: str, channels_last: bool) -> torch.memory_format:
    """Channels-last (NHWC) where the recipe asks for it, and for convolutional networks under the fast engines
    on the CPU, where oneDNN convolves it faster (lab 5's 32 → 64 convolution: 141 → 91 ms a step, forward
    and backward, on this project's 2-core machine)."""
    convolves = any(isinstance(module, nn.Conv2d) for module in model.modules())
    if channels_last or (engine != "plain" and device.type == "cpu" and convolves):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------------------------------------------------
# Optimiser, settings, evaluation batches
# ---------------------------------------------------------------------------------------------------------
def optimizer_options(kind, engine: str, device_type: str, version: str = torch.__version__) -> dict[str, bool]:
    """Keyword arguments for an optimiser (a cnnlab.loop.OptimizerKind) under ``engine`` on a ``device_type``
    device with PyTorch ``version``: its fused kernel only where that version has one for that device, since
    asking for a missing one raises at the first step."""
    options = {}
    since = dict(kind.fused).get(device_type)
    if engine != "plain" and since is not None and TorchVersion(version) >= since:
        options["fused"] = True
    if engine == "graph" and kind.capturable:
        options["capturable"] = True  # its step counter lives on the GPU, where a replayed graph can count
    return options


def eval_batch_size(device: torch.device) -> int:
    """Images per evaluation batch: a GPU takes a whole validation split at once; a CPU is fastest in
    batches whose activations stay in its caches (measured: 256 beats 1,000 by 2× on the fused path)."""
    return 10_000 if device.type == "cuda" else 256


def pick_engine(device: torch.device, recipe: Recipe, processes: int = 1) -> str:
    """The recipe's engine with 'auto' decided: CUDA graphs on one CUDA device where they can replay the step
    (4× the fast engine on lab 4, issue #18), the fast engine elsewhere."""
    if recipe.engine != "auto":
        return recipe.engine
    return "graph" if device.type == "cuda" and not why_not_graphed(recipe, processes) else "fast"


def why_not_graphed(recipe: Recipe, processes: int = 1) -> str | None:
    """Why CUDA graphs cannot serve this run, or None: a recipe whose step they cannot replay; a run in several
    processes, whose gradients DDP averages with calls that a graph of one process's step cannot hold; a
    PyTorch without ``CUDAGraph.register_generator_state``, whose replays would repeat one batch's flips and shifts;
    or graphed code no GPU has run yet (``graph_untried``)."""
    if what := graph_blocker(recipe):
        return f"CUDA graphs cannot replay this recipe's {what} yet"
    if processes > 1:
        return f"CUDA graphs replay one process's step, not DDP's across {processes} processes"
    if (recipe.flip or recipe.translate) and not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        return f"PyTorch {torch.__version__} cannot give a CUDA graph fresh random flips and shifts"
    if untried := graph_untried(recipe):
        return f"CUDA graphs of {untried} have not yet been checked on a GPU (--set engine=graph tries them)"
    return None


def graph_untried(recipe: Recipe) -> str | None:
    """What of this recipe the graph engine replays through code no GPU has run yet, or None (issue #18).

    The graphed schedule, weight average and augmentation are built from the eager step's own functions and match
    the fast engine bit for bit on the CPU (tests/test_engines.py), but capture and replay only happen on CUDA: until
    a card confirms them (`bench/gpu.sh quick`), 'auto' leaves such recipes on the fast engine, which a card has run,
    and ``--set engine=graph`` asks for the graph. The tutorial's recipes have none of these and run graphed."""
    untried = [what for what, present in (("a learning-rate schedule", recipe.schedule != "constant"),
                                          ("weight averaging", bool(recipe.ema)),
                                          ("flips and shifts", recipe.flip or bool(recipe.translate))) if present]
    return ", ".join(untried) or None

def for_device(recipe: Recipe, device: torch.device, processes: int = 1) -> Recipe:
    """The recipe with every 'auto' decided for ``device``: its precision and its engine."""
    return replace(recipe, autocast=pick_autocast(device, recipe.autocast),
                   engine=pick_engine(device, recipe, processes))


def engine_note(device: torch.device, recipe: Recipe, processes: int = 1) -> str | None:
    """A line for the user when CUDA graphs would be faster on ``device`` but cannot serve this run (a recipe
    resolved by ``for_device``)."""
    if device.type == "cuda" and recipe.engine == "fast" and (why := why_not_graphed(recipe, processes)):
        return f"{why}, so the fast engine runs"
    return None


@contextlib.contextmanager
def settings(device: torch.device, engine: str) -> Iterator[None]:
    """The fast engines' settings: TF32 and cuDNN's autotuner (unless deterministic) on CUDA, restored
    afterwards; on the CPU, an allocator that keeps freed memory."""
    if engine != "plain" and device.type == "cpu":
        keep_freed_memory()
    if engine == "plain" or device.type != "cuda":
        yield
        return
    precision, benchmark = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    torch.set_float32_matmul_precision("high")  # TF32, as TensorFlow uses on these cards
    # Shapes repeat every step, so autotuning pays; but it picks kernels by timing, so not under --deterministic.
    torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.benchmark = benchmark


@functools.cache
def keep_freed_memory() -> None:
    """Stop glibc's malloc from handing each freed activation back to the kernel (process-wide, once).

    By default blocks over 128 KiB are mapped and unmapped for every tensor, so every step
    page-faults its activations in afresh: about 8,900 faults and 18 ms of kernel time a step for
    the plain Fashion-MNIST network. Allocations up to 32 MiB then come from a heap kept up to 1 GiB.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, …): leave the allocator as it is
        pass


# ---------------------------------------------------------------------------------------------------------
# The training step as a CUDA graph
# ---------------------------------------------------------------------------------------------------------
class LearningRates:
    """Each parameter group's learning rate also held in a one-element tensor on the device, so that a replayed
    graph reads the rate of its step rather than the one it was captured with.

    The schedule moves on as ever (cnnlab.schedule's LambdaLR writes each group's rate as a float, which the
    checkpoint keeps); ``fill`` copies those floats in before a step, and ``swapped_in`` lends the tensors to
    the optimiser for the step, whose fused and capturable kernels take a tensor rate (torch 2.4 on). The CPU
    kernels read a tensor rate back as a double, so there it is float64 and the step is the float one to the last
    digit; CUDA's fused kernels read float32.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.groups = optimizer.param_groups
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        self.tensors = [torch.zeros((), dtype=dtype, device=device) for _ in self.groups]

    def fill(self) -> None:
        for group, rate in zip(self.groups, self.tensors):
            rate.fill_(float(group["lr"]))

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        floats = [group["lr"] for group in self.groups]
        for group, rate in zip(self.groups, self.tensors):
            group["lr"] = rate
        try:
            yield
        finally:  # the floats back, for the schedule and the checkpoint
            for group, rate in zip(self.groups, floats):
                group["lr"] = rate


def cuda_graphed(step: Callable[[torch.Tensor], None], batch_size: int, device: torch.device,
                 optimizer: torch.optim.Optimizer, generators: tuple[torch.Generator, ...] = (),
                 warmup: int = 3, capture: bool = True) -> Callable[[torch.Tensor], None]:
    """``step(batch)`` for a whole batch of indices, captured once and then replayed as one CUDA graph.

    ``step`` must work on tensors that stay in place (resident data, parameters, the optimiser's state,
    the weight average, the epoch's sums) and must not read anything back to the host; what changes from step
    to step lives in tensors it reads: the learning rate (``LearningRates``, filled before every step) and the
    random draws of ``generators``, registered with the graph so that each replay draws afresh. The first
    ``warmup`` full batches run as they are, on a side stream, so that lazily made state exists before the
    capture; a batch of another size (the epoch's short last batch) always runs as it is.

    ``capture=False`` runs, for every later full batch, the very code the capture would record, uncaptured, on
    any device: how the tests check the graph path's logic on a CPU against the fast engine.
    """
    from .errors import CnnlabError, hint

    if capture and device.type != "cuda":
        raise CnnlabError(f"engine 'graph' needs a CUDA device, not {device}; use "
                          f"{hint(cli='--set engine=fast', python='engine=fast in the recipe')}")
    graph: torch.cuda.CUDAGraph | None = None
    static_batch = torch.empty(batch_size, dtype=torch.long, device=device)
    side = torch.cuda.Stream(device) if capture else None
    rates = LearningRates(optimizer, device)
    eager_runs = 0

    def run_eagerly(batch: torch.Tensor) -> None:
        if side is None:
            step(batch)
            return
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")  # it is, for the graph's sake
            step(batch)
        torch.cuda.current_stream(device).wait_stream(side)

    def run(batch: torch.Tensor) -> None:
        nonlocal graph, eager_runs
        if len(batch) != batch_size or (graph is None and eager_runs < warmup):
            run_eagerly(batch)
            eager_runs += 1
            return
        static_batch.copy_(batch)
        rates.fill()  # this step's rate, as the schedule set it
        if not capture:
            with rates.swapped_in():
                step(static_batch)
            return
        if graph is None:
            graph = torch.cuda.CUDAGraph()
            for generator in generators:  # each replay then moves the generator on, as an eager step would
                if not hasattr(graph, "register_generator_state"):
                    raise CnnlabError(f"PyTorch {torch.__version__} cannot give a CUDA graph fresh random flips and "
                                      "shifts: use --set engine=fast (or auto)")
                graph.register_generator_state(generator)
            with rates.swapped_in(), torch.cuda.graph(graph):  # records the step on static_batch without running it
                step(static_batch)
        graph.replay()
    return run
