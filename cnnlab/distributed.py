"""Several processes, one run: `torchrun` starts them, PyTorch's DistributedDataParallel averages their gradients.

``torchrun --nproc-per-node N -m cnnlab.cli train RECIPE`` starts N copies of the command, each told its
place in WORLD_SIZE, RANK and LOCAL_RANK. ``process_group`` joins them for the length of the run (NCCL on
CUDA, each process on cuda:LOCAL_RANK; gloo on the CPU). The recipe's ``batch_size`` stays the global batch:
every process draws the same order of the training images, takes its shard of each batch, and DDP averages
the gradients, so a step is the step one process would take on the whole batch. Rank 0 alone prints and
writes the run folder. Without torchrun (or with one process) none of this runs: there is no process group,
and every helper here gives what one process needs.
"""
from __future__ import annotations

import contextlib
import gc
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import engines
from .errors import UsageError
from .recipes import Recipe

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Where torchrun put this process."""

    rank: int = 0  # among all processes, on every machine
    local_rank: int = 0  # among this machine's processes: which GPU it takes
    world_size: int = 1  # how many processes train the run


def launch() -> Launch:
    """torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); one process alone where it is not set."""
    if not {"WORLD_SIZE", "RANK", "LOCAL_RANK"} <= os.environ.keys():
        return Launch()
    return Launch(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def world_size() -> int:
    return launch().world_size


def rank() -> int:
    return launch().rank


def is_main() -> bool:
    """Is this the process that prints and writes the run folder: rank 0, or the only one."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend ('nccl', 'gloo'); None in one process."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


# ---------------------------------------------------------------------------------------------------------
# The process group, for the length of a run
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def process_group(recipe: Recipe, device: torch.device) -> Iterator[torch.device]:
    """Under torchrun with several processes: check that ``recipe`` can be shared out, join the others and
    yield this process's device (cuda:LOCAL_RANK on CUDA); leave the group on the way out, after an error or
    Ctrl-C too. Elsewhere: ``device`` as it is, and no group."""
    world = launch()
    if world.world_size == 1:
        yield device
        return
    _check(recipe, device, world.world_size)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    # A gloo process that shuts down while a peer is still at work (rank 0 writing the run folder), or with
    # DDP's reference cycles still holding the group, sometimes aborts at exit ("terminate called without an
    # active exception": 5 runs in 12 of a small DDP script here). Leaving together, the cycles collected
    # first, it did not abort in 14.
    try:
        yield device
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def _check(recipe: Recipe, device: torch.device, processes: int) -> None:
    """Refuse, before any process waits for another, what several processes cannot train."""
    if recipe.batch_size % processes:
        raise UsageError(f"--batch-size {recipe.batch_size} does not split over {processes} processes: the batch "
                         f"size is the global batch, so give a multiple of {processes}")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"torchrun trains on CUDA or the CPU, not {device}: pass --device cuda or cpu")
    if device.index is not None:
        raise UsageError(f"under torchrun each process takes cuda:LOCAL_RANK: pass --device cuda, not {device}")
    if recipe.engine == "graph":
        raise UsageError("engine 'graph' replays one process's step: under torchrun use --set engine=fast")
    if recipe.freeze_epochs:  # DDP waits for every parameter's gradient in each backward pass: a frozen one never comes
        raise UsageError(f"--set freeze_epochs={recipe.freeze_epochs} cannot run under torchrun: leave it at 0, or "
                         "train in one process")
    if recipe.sync_batchnorm and device.type != "cuda":
        raise UsageError("sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel): leave it off, "
                         "and each process normalises its own shard")


# ---------------------------------------------------------------------------------------------------------
# What the training loop asks of the other processes
# ---------------------------------------------------------------------------------------------------------
def shard(batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This process's part of a global batch of indices — the rank-th of world_size contiguous pieces, which an
    epoch's short last batch may make unequal — and the factor that scales the mean loss over that part so
    that DDP's average of the gradients is the whole batch's mean gradient. In one process: (batch, 1.0)."""
    processes = world_size()
    if processes == 1:
        return batch, 1.0
    part = batch.tensor_split(processes)[rank()]
    return part, len(part) * processes / len(batch)


def data_parallel(model: nn.Module, recipe: Recipe, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's forward (cnnlab.engines); under torchrun inside DistributedDataParallel, which averages the
    gradients over the processes in each backward pass and hands rank 0's buffers (BatchNorm's running
    statistics) to the others before each step. BatchNorm normalises each process's shard, or with
    ``recipe.sync_batchnorm`` the global batch."""
    if world_size() > 1 and recipe.sync_batchnorm:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place (cnnlab's networks are Sequential), same tensors
    forward = engines.forward_fn(model, device, recipe.engine)
    if world_size() == 1:
        return forward
    # The fused first block (cnnlab.engines) hands back its kernel's gradient in the plain layout; DDP copies it
    # into its channels-last bucket (a few hundred numbers a step) and warns that the layouts differ.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(_Forward(model, forward), device_ids=[device] if device.type == "cuda" else None)


class _Forward(nn.Module):
    """The model's parameters with the engine's forward, which may call its layers directly, as one module."""

    engine_forward: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model  # registers the parameters DDP averages and the buffers it broadcasts
        object.__setattr__(self, "engine_forward", forward)  # not a submodule: it may be ``model`` itself

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.engine_forward(images)


def sum_over_processes(*tensors: torch.Tensor) -> None:
    """Replace each tensor, in place, by its sum over the processes (the epoch's loss and correct guesses)."""
    if world_size() > 1:
        for tensor in tensors:
            dist.all_reduce(tensor)


def broadcast(value: T) -> T:
    """Rank 0's ``value`` (small and picklable, e.g. the run folder it made) on every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's ``value`` in rank order on rank 0, an empty list on the others; ``[value]`` in one process."""
    if world_size() == 1:
        return [value]
    values: list | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, values, dst=0)
    return values or []
