"""The device rule: where a network computes, and in what precision — one rule for every command and function.

Every public ``device`` parameter takes a name ('auto', 'cpu', 'cuda', 'cuda:1', 'mps') or a ``torch.device``.
Left out (None), it means: where the model already is, for a model you hand cnnlab (which it never moves for
good: ``borrowed`` puts it back where and as it was); where the recipe says, for ``fit`` (``Recipe.device``,
'auto' by default); and 'auto' for a run that cnnlab loads from its folder itself. 'auto' picks CUDA, then
Apple's MPS, then the CPU.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .errors import CnnlabError, hint
from .fast import pick_autocast

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
    """Where ``model``'s weights are (the CPU for a network without any)."""
    tensor: torch.Tensor | None = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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
# Keyed by cnnlab.recipes.AUTOCASTS; 'auto' is bf16 or off, as cnnlab.fast.pick_autocast finds the device.
AUTOCASTS = {"auto": None, "off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward pass's mixed precision (a recipe's ``autocast``: off, bf16, fp16 or auto); a no-op when off."""
    dtype = AUTOCASTS[pick_autocast(device, precision)]
    if dtype is torch.float16 and device.type != "cuda":
        raise CnnlabError(f"{hint(cli='--set autocast=fp16', python='autocast fp16')} needs a CUDA device, "
                          f"not {device}; use bf16 or off")
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
