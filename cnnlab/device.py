"""The device rule: where a network computes, and in what precision — one rule for every command and function.

Every public ``device`` parameter takes a name ('auto', 'cpu', 'cuda', 'cuda:1', 'mps') or a ``torch.device``.
Left out (None), it means: where the model already is, for a model you hand cnnlab (which it never moves for
good: ``borrowed`` puts it back where and as it was); where the recipe says, for ``fit`` (``Recipe.device``,
'auto' by default); and 'auto' for a run that cnnlab loads from its folder itself. 'auto' picks CUDA, then
Apple's MPS, then the CPU.
"""
from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch
from torch import nn

from .errors import CnnlabError, hint

Device = str | torch.device | None  # what every public ``device`` parameter takes


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; a device that is not here is a one-line CnnlabError."""
    name = str(device)
    flag = hint(cli="--device", python="device")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, TypeError):
        raise CnnlabError(f"{flag} {name!r}: choose auto, cpu, cuda, cuda:N or mps") from None
    use = hint(cli="use --device cpu or auto", python="use device='cpu' or 'auto'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"{flag} {name}: no CUDA device is available here; {use}")
    if resolved.type == "mps" and not _mps_available():
        raise CnnlabError(f"{flag} {name}: Apple's MPS is not available here; {use}")
    return resolved


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are (the CPU for a network without any); weights on the meta device are refused."""
    tensor: torch.Tensor | None = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    if tensor is not None and tensor.is_meta:  # shapes without values: nothing can compute with them
        raise CnnlabError("the model's weights are on the meta device, shapes without values: give them values "
                          "first (model.to_empty(device='cpu'), then load_state_dict)")
    return tensor.device if tensor is not None else torch.device("cpu")


def device_name(device: torch.device) -> str:
    """What the device is, for environment.json and the benches' tables: a card's name, or the CPU's model as the
    system names it (a run's seconds, and whether bf16 is native, depend on which)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    try:
        with open("/proc/cpuinfo") as info:  # Linux; elsewhere platform says what it can
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def choose_device(device: Device = None, model: nn.Module | None = None, otherwise: str = "auto") -> torch.device:
    """The rule, written once: ``device`` when given; else where ``model`` is; else ``otherwise`` ('auto', or for
    ``fit`` the recipe's device)."""
    if device is not None:
        return resolve_device(device)
    if model is not None:
        return model_device(model)
    return resolve_device(otherwise)


@contextlib.contextmanager
def borrowed(model: nn.Module, device: Device = None) -> Iterator[torch.device]:
    """``model`` on ``device`` (None: where it is) and in eval mode for the block, then back where and as it was.

    Yields the device. ``Module.to`` moves the parameters in place, so an optimiser holding them keeps them.
    """
    home, training = model_device(model), model.training
    target = choose_device(device, model)
    moved = target != home
    if moved:
        model.to(target)
    model.eval()
    try:
        yield target
    finally:
        if moved:
            model.to(home)
        model.train(training)


# ---------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------
def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute in bf16 natively? Elsewhere bf16 autocast is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True  # MPS and others: nothing to ask, so nothing to warn about
    found = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in found if probe is not None]  # private in PyTorch: absent in some versions
    return not probes or any(probe() for probe in probes)

def pick_autocast(device: torch.device, autocast: str, training: bool = True) -> str:
    """The recipe's mixed precision with 'auto' decided for ``device``: bf16 on a CPU with AVX512-BF16 or AMX and
    on a GPU that computes bf16, fp32 ('off') elsewhere — emulated bf16 ran the Fashion lab 4.7× slower than fp32
    on an AVX2 CPU (issue #17). Any other value is the user's choice and stays, but fp16, whose loss scaling is
    CUDA's: training in it elsewhere is refused (before a run folder is made), and a network trained in it on a GPU
    predicts in fp32 elsewhere."""
    if autocast == "fp16" and device.type != "cuda":
        if training:
            raise CnnlabError(f"{hint(cli='--set autocast=fp16', python='autocast fp16')} needs a CUDA device, "
                              f"not {device}; use bf16 or off")
        return "off"
    if autocast != "auto":
        return autocast
    return "bf16" if device.type in ("cpu", "cuda") and native_bf16(device) else "off"

def precision_note(device: torch.device, autocast: str) -> str | None:
    """A line for the user when the recipe's mixed precision will slow ``device`` down instead of speeding it up."""
    if autocast == "bf16" and not native_bf16(device):
        where = "this CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else f"{device} has no native bf16"
        fix = hint(cli="--set autocast=auto", python="autocast='auto' in the recipe "
                                                     "(cnnlab.with_overrides(recipe, {'autocast': 'auto'}))")
        return f"{where}, so bf16 autocast is emulated and slow here; {fix} trains in fp32 where bf16 is slow"
    return None

# Keyed by cnnlab.recipes.AUTOCASTS; 'auto' is bf16 or off, as pick_autocast finds the device.
AUTOCASTS = {"auto": None, "off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str, graphed: bool = False, training: bool = True) -> torch.autocast:
    """The forward pass's mixed precision (a recipe's ``autocast``: off, bf16, fp16 or auto; ``pick_autocast``);
    a no-op when off. ``training``: False for inference, which never refuses a precision.

    ``graphed``: for a step that a CUDA graph captures, which must not keep autocast's cache of cast weights
    (PyTorch's CUDA graph notes: the cache would hold tensors from the capture, not the replayed step's)."""
    dtype = AUTOCASTS[pick_autocast(device, precision, training)]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=not graphed)
