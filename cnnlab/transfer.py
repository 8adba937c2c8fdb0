"""Starting from a network you trained: a run's layers, all but its output layer, as a new run's first weights.

``cnnlab train RECIPE --data FOLDER --from RUN`` (``train_folder(..., from_run=RUN)``) checks RUN whole before
anything is made, fits the recipe and the images to RUN's network (its model, input shape, preprocessing and
normalisation: its layers only know inputs made as its own were), copies every layer but the head into the
new network, whose head is made new for the folder's classes, and records where it started in model.json.
``recipe.freeze_epochs`` keeps the taken layers still for the first epochs (``cnnlab.loop.freeze``).
No download: the start is a run folder of yours, read as every run folder is (``cnnlab.runs.Run``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from .errors import CnnlabError, hint
from .loop import Start
from .models import head_name
from .recipes import Recipe, with_overrides
from .runs import CHECKPOINT, WEIGHTS, ModelInfo, Run, load_run


def _flag(run: Run) -> str:
    return f"{hint(cli='--from', python='from_run')} {run.run_dir}"


def source_run(run: Run | str | os.PathLike) -> Run:
    """RUN checked as a start, its network loaded: a finished run folder whose files and weights are sound.
    Anything else is one CnnlabError line naming RUN and what to do."""
    run = run if isinstance(run, Run) else Run(run)
    other = "or start from another run (`cnnlab runs` lists them)"
    if not run.run_dir.is_dir():
        raise CnnlabError(f"{_flag(run)}: no such run folder; name a folder written by `cnnlab train`, {other}")
    if not run.has("recipe.json"):
        raise CnnlabError(f"{_flag(run)}: not a cnnlab run folder (no recipe.json); name a folder written by "
                          f"`cnnlab train`")
    try:
        if not run.has(WEIGHTS) or not run.finished:
            if run.has(CHECKPOINT):
                resume = hint(cli=f"`cnnlab train --resume {run.run_dir}`", python=f"resume_run({str(run.run_dir)!r})")
                raise CnnlabError(f"{_flag(run)}: its training has not finished; finish it first ({resume}), {other}")
            raise CnnlabError(f"{_flag(run)}: has no trained weights ({WEIGHTS} and metrics.json); {other}")
        load_run(run)  # recipe.json, model.json and the weights, each checked
    except CnnlabError as error:
        if str(error).startswith(_flag(run)):
            raise
        raise CnnlabError(f"{_flag(run)}: cannot start from it: {error}") from None
    return run


def adopt(recipe: Recipe, source: Run) -> tuple[Recipe, str | None]:
    """``recipe`` fitted to ``source``'s network: its model, its input normalisation and, for a folder, its
    preprocessing; and a note when the model is not the recipe's own (the run takes RUN's, rather than refuse:
    starting from RUN means starting from RUN's network)."""
    info = source.info
    changes: dict[str, Any] = {"model": info.model, "normalize": info.normalization is not None}
    if recipe.dataset == "folder":
        changes["preprocess"] = info.preprocess
    note = None if recipe.model == info.model else (
        f"{source.run_dir.name} holds a {info.model} network, so this run trains a {info.model}, not the recipe's "
        f"{recipe.model}")
    return with_overrides(recipe, changes), note


def check_shape(source: Run, in_shape: Sequence[int | None], fix: str) -> None:
    """Refuse images of another shape (C, H, W; None: not fixed) than ``source``'s network takes."""
    theirs = source.info.in_shape
    if any(given is not None and given != wanted for given, wanted in zip(in_shape, theirs)):
        shown = "×".join("?" if side is None else str(side) for side in in_shape)
        raise CnnlabError(f"{_flag(source)}: its network takes {'×'.join(map(str, theirs))} images, the data are "
                          f"{shown}; {fix}")


def take_layers(model: nn.Module, source: Run) -> Start:
    """Copy every layer of ``source``'s network but the head into ``model`` (the same network, built for the new
    classes, its head left as built); the layers taken and the normalisation they were trained with."""
    head = head_name(model)
    taken = {key: value for key, value in source.model.state_dict().items() if not key.startswith(f"{head}.")}
    missing, unexpected = model.load_state_dict(taken, strict=False)  # copies: the model keeps its own tensors
    assert not unexpected and all(key.startswith(f"{head}.") for key in missing), (missing, unexpected)
    return Start(tuple(dict.fromkeys(key.rpartition(".")[0] for key in taken)), source.info.normalization)


def record(source: Run, start: Start) -> dict[str, Any]:
    """model.json's ``started_from``."""
    return {"run": source.run_dir.name, "path": str(source.run_dir.resolve()), "layers": list(start.layers)}


def resumed_start(info: ModelInfo, model: nn.Module, source: str) -> Start | None:
    """The start of a run resumed from its checkpoint (which holds its weights): the layers model.json says it
    took, and its normalisation; None for a run that started from fresh weights."""
    if info.started_from is None:
        return None
    layers = tuple(info.started_from["layers"])
    known = dict(model.named_modules())
    if not all(layer in known for layer in layers):
        raise CnnlabError(f"{source}: started_from names layers its {info.model} network does not have; the file "
                          "is damaged: train the recipe afresh")
    return Start(layers, info.normalization)
