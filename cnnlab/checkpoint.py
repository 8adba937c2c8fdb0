"""Checkpoints: the whole training state in one file, so that an interrupted run resumes exactly where it stopped.

``checkpoint.safetensors`` holds the tensors — weights, the optimiser's moments, every random generator's
state — and, in its metadata, JSON for the rest: the history, the optimiser's settings, the device and a
fingerprint of the data. One file rather than a pair, so a crash can never leave one new and the other old;
``atomic_write`` replaces it whole. Nothing is unpickled, and every value is checked before it is used.

Under torchrun rank 0 writes it, holding every process's generators (``rng.NAME`` rank 0's, as one process
names them, ``rng.RANK.NAME`` the others'), and every process resumes from it with its own.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import CnnlabError, UsageError, hint
from .files import atomic_write, check_regular
from .history import EpochResult, check_history
from .loop import TrainState
from .runs import MAX_WEIGHTS, check_tensors

FORMAT = "cnnlab-checkpoint/1"


def _rng_states(state: TrainState, device: torch.device) -> dict[str, torch.Tensor]:
    """The generators training draws from: the shuffle's, the CPU's (dropout on the CPU), the device's."""
    states = {"rng.shuffle": state.shuffle.get_state(), "rng.torch": torch.get_rng_state(),
              "rng.augment": state.augment.get_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def save_checkpoint(path: Path, state: TrainState, device: torch.device, data: str) -> int:
    """Write ``state`` and the random generators to ``path`` atomically; returns the file's size in bytes.

    Under torchrun every process calls it, to hand rank 0 its generators; the others write nothing (and return 0).
    """
    from safetensors.torch import save

    generators = distributed.gather(_rng_states(state, device))
    if not distributed.is_main():
        return 0
    optimizer = state.optimizer.state_dict()
    tensors = {f"model.{key}": value for key, value in state.model.state_dict().items()}
    for index, entries in optimizer["state"].items():  # every entry of the built-in optimisers is a tensor
        tensors.update({f"optimizer.{index}.{name}": value for name, value in entries.items()})
    for rank, states in enumerate(generators):
        tensors.update({key.replace("rng.", f"rng.{rank}.") if rank else key: value for key, value in states.items()})
    if state.average is not None:
        tensors.update({f"average.{key}": value for key, value in state.average.model.state_dict().items()})
    meta = {"history": [asdict(row) for row in state.history], "param_groups": optimizer["param_groups"],
            "device": device.type, "world_size": len(generators), "data": data,
            "scheduler_steps": state.scheduler.last_epoch, "scaler": state.scaler.state_dict(),
            "average_updates": int(state.average.updates.item()) if state.average is not None else 0}
    payload = save({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
                   metadata={"format": FORMAT, "state": json.dumps(meta)})
    atomic_write(path, payload)
    return len(payload)


def load_checkpoint(path: Path, state: TrainState, device: torch.device, data: str) -> str:
    """Restore ``state`` — built afresh for the same recipe, on ``device`` — and the random generators.

    Returns the device type the checkpoint was written on. From another kind of device (CPU ↔ CUDA) the
    device's generators cannot carry over: the augmentation generator keeps the seed ``state`` was built with.
    Every value is checked before any is used.
    """
    tensors, meta = _read(path)
    processes = _check_origin(path, meta, data)
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "rng": {}, "average": {}}
    for key, tensor in tensors.items():
        part, _, name = key.partition(".")
        if part not in parts:
            raise CnnlabError(f"{path}: unexpected tensor {key!r}; {DAMAGED}")
        parts[part][name] = tensor
    own, rngs = _generators(path, parts["rng"], processes, meta["device"] == device.type, state, device)
    check_tensors(path, parts["model"], state.model.state_dict(), DAMAGED)
    if state.average is not None:
        check_tensors(path, parts["average"], state.average.model.state_dict(), DAMAGED)
    steps, updates = meta.get("scheduler_steps", 0), meta.get("average_updates", 0)
    if not (type(steps) is int and type(updates) is int and 0 <= steps and 0 <= updates):
        raise CnnlabError(f"{path}: malformed schedule or average counters; {DAMAGED}")
    check_tensors(path, own, rngs, DAMAGED)
    scaler = _scaler_state(path, meta.get("scaler", {}), state.scaler.state_dict())
    names = {id(parameter): name for name, parameter in state.model.named_parameters()}
    order = [parameter for group in state.optimizer.param_groups for parameter in group["params"]]
    # Taken layers still frozen, or frozen until lately, may have no optimiser state yet
    frozen = frozenset(index for index, parameter in enumerate(order) if names.get(id(parameter)) in state.taken)
    optimizer = _optimizer_state(path, parts["optimizer"], meta["param_groups"], state.optimizer, DAMAGED, frozen)
    history = _history(path, meta["history"], DAMAGED)

    state.model.load_state_dict(parts["model"])
    state.optimizer.load_state_dict(optimizer)
    try:
        state.shuffle.set_state(own["shuffle"])
        if "augment" in rngs:
            state.augment.set_state(own["augment"])
        torch.set_rng_state(own["torch"])
        if "cuda" in rngs:
            torch.cuda.set_rng_state(own["cuda"], device)
    except RuntimeError as error:  # a generator refuses a state it could not have written
        raise CnnlabError(f"{path}: a random generator's state is invalid ({error}); {DAMAGED}") from None
    state.history[:] = history
    state.scheduler.last_epoch = steps  # the optimiser's state already holds the learning rate it had reached
    if scaler and state.scaler.is_enabled():
        state.scaler.load_state_dict(scaler)
    if state.average is not None:
        state.average.load_state_dict({"model": parts["average"], "updates": updates})
    return str(meta["device"])


DAMAGED = "the checkpoint is damaged: train the recipe afresh"


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint's tensors and its JSON state, from a regular file inside its run folder."""
    from safetensors import SafetensorError, safe_open

    try:
        check_regular(path, path.parent, MAX_WEIGHTS, DAMAGED)
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
        meta = json.loads(header["state"]) if header.get("format") == FORMAT else None
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; {path.parent} has no checkpoint to resume from") from None
    except (SafetensorError, OSError, ValueError, KeyError, RecursionError) as error:
        raise CnnlabError(f"{path}: not a readable checkpoint ({error}); {DAMAGED}") from None
    if not isinstance(meta, dict) or not {"history", "param_groups", "device", "data"} <= set(meta):
        raise CnnlabError(f"{path}: not a {FORMAT} file; {DAMAGED}")
    return tensors, meta


def _check_origin(path: Path, meta: dict[str, Any], data: str) -> int:
    """Refuse a checkpoint of other data or of another number of processes; the number of processes."""
    if meta["data"] != data:
        raise CnnlabError(f"{path.parent} was trained on other data than was found now; pass the "
                          f"{hint(cli='--data-dir', python='data_dir')} it was trained with (its environment.json "
                          "records it)")
    processes = meta.get("world_size", 1)
    if type(processes) is not int or processes < 1:
        raise CnnlabError(f"{path}: malformed world_size; {DAMAGED}")
    if processes != distributed.world_size():  # each process carries on with its own random generators
        how = f"under torchrun with {processes} processes in all" if processes > 1 else "without torchrun"
        raise UsageError(f"{path} was written by {processes} training process(es), not "
                         f"{distributed.world_size()}: resume it {how}")
    return processes


def _generators(path: Path, tensors: dict[str, torch.Tensor], processes: int, same_kind: bool, state: TrainState,
                device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """This process's generator states from the checkpoint, and the fresh ones they must match. From another
    kind of device, the device's generators mean nothing here: the fresh state's augmentation generator,
    seeded as a new run seeds it, carries on."""
    generators: dict[str, dict[str, torch.Tensor]] = {}  # by rank: '' for rank 0's, named as one process's
    for name, tensor in tensors.items():
        rank, _, generator = name.rpartition(".")
        generators.setdefault(rank, {})[generator] = tensor
    if not set(generators) <= {""} | {str(rank) for rank in range(1, processes)}:
        raise CnnlabError(f"{path}: random generators of processes the run did not have; {DAMAGED}")
    own = generators.get(str(distributed.rank()) if distributed.rank() else "", {})
    rngs = {name.removeprefix("rng."): value for name, value in _rng_states(state, device).items()}
    if not same_kind:
        for name in ("cuda", "augment"):
            own.pop(name, None)
            rngs.pop(name, None)
    return own, rngs


def _scaler_state(path: Path, scaler: Any, fresh: dict[str, Any]) -> dict[str, Any]:
    """fp16's loss scale; {} without fp16 (and in files from before it was kept)."""
    if not (scaler == {} or isinstance(scaler, dict) and scaler.keys() == fresh.keys()
            and all(scaler[key] == fresh[key] for key in ("growth_factor", "backoff_factor", "growth_interval"))
            and type(scaler["scale"]) is float and 0 < scaler["scale"] < float("inf")
            and type(scaler["_growth_tracker"]) is int and scaler["_growth_tracker"] >= 0):
        raise CnnlabError(f"{path}: malformed loss scale; {DAMAGED}")
    return scaler


def _optimizer_state(path: Path, tensors: dict[str, torch.Tensor], groups: Any, optimizer: torch.optim.Optimizer,
                     damaged: str, frozen: frozenset[int] = frozenset()) -> dict[str, Any]:
    """The optimiser's state dict from the checkpoint, checked against ``optimizer`` (built afresh). The
    parameters numbered in ``frozen`` (layers taken from another run, held still at first) may have no state:
    an optimiser keeps none for a parameter it has not moved yet."""
    def settings(group: Any) -> Any:  # all but the learning rate, which a schedule may have moved
        return {key: value for key, value in group.items() if key != "lr"} if isinstance(group, dict) else group

    fresh = json.loads(json.dumps(optimizer.state_dict()["param_groups"]))  # tuples as JSON gives them back
    if not isinstance(groups, list) or list(map(settings, groups)) != list(map(settings, fresh)) or \
            not all(type(group.get("lr")) in (int, float) and 0 < group["lr"] < float("inf") for group in groups):
        raise CnnlabError(f"{path}: the optimiser's settings differ from those the recipe gives; {damaged}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        index, _, name = key.partition(".")
        if not (index.isascii() and index.isdigit() and len(index) < 10) or int(index) >= len(params) or not name:
            raise CnnlabError(f"{path}: unexpected optimiser tensor {key!r}; {damaged}")
        shape = params[int(index)].shape
        if tensor.shape not in (shape, torch.Size([])) or not tensor.is_floating_point() or \
                not torch.isfinite(tensor).all():
            raise CnnlabError(f"{path}: optimiser tensor {key!r} does not fit a parameter of shape {tuple(shape)} "
                              f"or is not finite; {damaged}")
        state.setdefault(int(index), {})[name] = tensor
    if state and (set(range(len(params))) - set(state) - frozen or len({frozenset(e) for e in state.values()}) != 1):
        raise CnnlabError(f"{path}: the optimiser's state covers only some parameters; {damaged}")
    return {"state": state, "param_groups": groups}


def _history(path: Path, rows: Any, damaged: str) -> list[EpochResult]:
    names = {f.name for f in fields(EpochResult)}
    if not isinstance(rows, list):
        raise CnnlabError(f"{path}: the history is not a list; {damaged}")
    for epoch, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.keys() != names or row["epoch"] != epoch or \
                not all(type(row[name]) in (int, float) for name in names):
            raise CnnlabError(f"{path}: row {epoch} of the history is malformed; {damaged}")
    history = [EpochResult(**row) for row in rows]
    if problem := check_history(history):
        raise CnnlabError(f"{path}: in its history, {problem}; {damaged}")
    return history
