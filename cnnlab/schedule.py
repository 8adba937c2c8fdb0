"""How the weights move over a run beyond a fixed learning rate: the learning-rate schedule, per step, and an
exponential moving average of the weights. Both keep their state in a ``state_dict`` so a checkpoint can
carry them.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def lr_factor(step: int, total_steps: int, schedule: str, warmup: float = 0.0, lr_end: float = 0.0) -> float:
    """The learning rate at ``step`` (counted from 0) as a fraction of the recipe's ``lr``.

    'linear' rises from 0 to 1 over the first ``warmup`` share of the steps, then falls in a straight line
    to ``lr_end`` at the last step (one-cycle's and airbench's triangle); 'cosine' falls along half a cosine.
    """
    if schedule == "constant":
        return 1.0
    warmup_steps = warmup * total_steps
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)  # 0 → 1 over the decay
    shape = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return lr_end + (1 - lr_end) * shape


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, schedule: str, warmup: float,
                   lr_end: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per optimiser step; it scales every parameter group's own learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, schedule, warmup, lr_end))


def param_groups(model: nn.Module, lr: float, weight_decay: float, norm_lr_scale: float) -> list[dict]:
    """The trainable parameters, with normalisation layers' at ``norm_lr_scale`` times the learning rate and
    the same decay per step (airbench's ``bias_scaler``); one group when the scale is 1."""
    norms = [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
             for p in m.parameters(recurse=False) if p.requires_grad]
    norm_ids = {id(p) for p in norms}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in norm_ids]
    if norm_lr_scale == 1 or not norms:
        return [{"params": norms + others}]
    return [{"params": others},
            {"params": norms, "lr": lr * norm_lr_scale, "weight_decay": weight_decay / norm_lr_scale}]


class WeightAverage:
    """An exponential moving average of a model's weights and buffers, updated after each optimiser step.

    The decay ramps up as ``(1 + t) / (10 + t)`` over the first updates, so the random initial weights are
    soon forgotten (TensorFlow's ``num_updates``); ``model`` is the averaged copy to evaluate. The count ``t``
    and the decay live on the model's device, so an update reads nothing back and a CUDA graph replays it with
    the decay of its step; in float64 (float32 on Apple's GPU, which has no float64) they are the Python floats
    this average once used, to the last digit.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay  # per optimiser step
        device = next(self.model.parameters()).device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.updates = torch.zeros((), dtype=dtype, device=device)  # t, counted on the device

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1 - ((1 + self.updates) / (10 + self.updates)).clamp(max=self.decay)  # 1 - min(decay, ramp)
        weights: dict[torch.dtype, torch.Tensor] = {}  # the weight in each floating dtype, cast once an update
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                if average.dtype not in weights:
                    weights[average.dtype] = weight.to(average.dtype)
                average.lerp_(current, weights[average.dtype])
            else:
                average.copy_(current)  # counters such as BatchNorm's num_batches_tracked
        self.updates.add_(1)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": int(self.updates.item())}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates.fill_(int(state["updates"]))
