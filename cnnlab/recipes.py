"""Recipes as data: a frozen dataclass per training setup, in a dict keyed by name.

A command-line override replaces one field and is parsed by that field's type. The tutorial's recipes
say where each value comes from (LABS.md, "Common steps" and "Keras defaults").
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # a key of cnnlab.data.DATASETS (or 'folder' for your own images)
    model: str  # a key of cnnlab.models.MODELS
    description: str = ""
    epochs: int = 10  # passes over the training split; LABS.md step 8
    batch_size: int = 128  # images per optimiser step; LABS.md step 8
    optimizer: str = "sgd"  # sgd, adam, adamw, rmsprop, adagrad, nadam
    lr: float | None = None  # learning rate per step; None: the optimiser's Keras default (sgd 0.01, adam 1e-3)
    momentum: float = 0.0  # sgd and rmsprop; Keras's 'sgd' has none
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # L2 factor per step, applied by the optimiser
    eps: float = 1e-7  # adam/adamw/rmsprop/nadam/adagrad epsilon; Keras's 1e-7 (PyTorch's default is 1e-8)
    label_smoothing: float = 0.0  # fraction of the target mass spread over all classes
    loss_clip: float = 1e-7  # probabilities clipped to [clip, 1 - clip] as Keras's cross-entropy does; 0: off
    val_fraction: float = 0.2  # share of the training images held out; LABS.md step 2 (test_size=0.2)
    split_seed: int = 9  # the split's RandomState seed; LABS.md step 2 (random_state=9)
    seed: int = 0  # weights, shuffling and dropout
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    engine: str = "fast"  # how a step is computed, never what: fast, plain (PyTorch as written) or graph (CUDA)

    def resolved(self) -> "Recipe":
        """The recipe with defaults that depend on other fields filled in (the learning rate)."""
        from .train import OPTIMIZERS

        if self.lr is None:
            return replace(self, lr=OPTIMIZERS[self.optimizer].default_lr)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENGINES = ("fast", "plain", "graph")  # cnnlab.fast says what each does
TUTORIAL = "LABS.md"
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("mnist-mlp", "mnist", "mlp", optimizer="sgd",
               description=f"Lab 2: Dense(512) MLP on MNIST, Keras 'sgd' ({TUTORIAL})"),
        Recipe("mnist-cnn", "mnist", "cnn", optimizer="sgd",
               description=f"Lab 3: one-convolution CNN on MNIST, Keras 'sgd' ({TUTORIAL})"),
        Recipe("fashion-cnn", "fashion-mnist", "cnn-dropout", optimizer="adam",
               description=f"Lab 4: lab 3's CNN with Dropout(0.3) on Fashion-MNIST, Keras 'adam' ({TUTORIAL})"),
        Recipe("cifar10-cnn", "cifar10", "cnn-deep", optimizer="adam",
               description=f"Lab 5: two-convolution CNN with dropout on CIFAR-10, Keras 'adam' ({TUTORIAL})"),
    )
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)} "
                         "(cnnlab recipes lists them)") from None


# ---------------------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------------------
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def parse_value(field: str, text: str) -> Any:
    """Parse ``text`` as the type of ``Recipe.<field>``; a bad value raises UsageError naming both."""
    hints = _field_types()
    if field not in hints:
        raise UsageError(f"unknown recipe field {field!r}: fields are {', '.join(hints)}")
    hint = hints[field]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if type(None) in options and text.strip().lower() in ("none", "null", "default"):
        return None
    for kind in (o for o in options if o is not type(None)):
        try:
            if kind is bool:
                lowered = text.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
            if kind is str:
                return text
        except ValueError:
            continue
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UsageError(f"--{field.replace('_', '-')} {text!r}: expected {names}")


def with_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with fields replaced (strings are parsed by the field's type), then checked."""
    hints = _field_types()
    parsed = {}
    for field, value in overrides.items():
        if field not in hints:
            raise UsageError(f"unknown recipe field {field!r}: fields are {', '.join(hints)}")
        parsed[field] = parse_value(field, value) if isinstance(value, str) else value
    return validate(replace(recipe, **parsed))


def validate(recipe: Recipe) -> Recipe:
    """Check every field's range and every name against its registry; returns the recipe unchanged."""
    from .data import DATASETS
    from .models import MODELS
    from .train import OPTIMIZERS

    def bad(field: str, why: str) -> UsageError:
        return UsageError(f"--{field.replace('_', '-')} {getattr(recipe, field)!r}: {why}")

    if recipe.epochs < 1:
        raise bad("epochs", "must be at least 1")
    if recipe.batch_size < 1:
        raise bad("batch_size", "must be at least 1")
    if recipe.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"choose one of {', '.join(OPTIMIZERS)}")
    if recipe.lr is not None and not recipe.lr > 0:
        raise bad("lr", "must be a positive number")
    for field in ("momentum", "weight_decay", "eps", "label_smoothing", "loss_clip"):
        if not getattr(recipe, field) >= 0:
            raise bad(field, "must be zero or more")
    if recipe.label_smoothing >= 1 or recipe.loss_clip >= 0.5:
        raise bad("label_smoothing" if recipe.label_smoothing >= 1 else "loss_clip", "is far too large")
    if not 0 < recipe.val_fraction < 1:
        raise bad("val_fraction", "must lie strictly between 0 and 1")
    if recipe.dataset not in DATASETS and recipe.dataset != "folder":
        raise bad("dataset", f"choose one of {', '.join(DATASETS)}")
    if recipe.model not in MODELS:
        raise bad("model", f"choose one of {', '.join(MODELS)}")
    device = recipe.device
    if not (device in ("auto", "cpu", "cuda", "mps") or
            (device.startswith("cuda:") and device[5:].isdigit())):
        raise bad("device", "choose auto, cpu, cuda, cuda:N or mps")
    if recipe.engine not in ENGINES:
        raise bad("engine", f"choose one of {', '.join(ENGINES)}")
    if recipe.engine == "graph" and device in ("cpu", "mps"):
        raise bad("engine", f"CUDA graphs need --device cuda (or auto on a CUDA machine), not {device}")
    return recipe


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Rebuild a recipe saved as JSON; fields this version does not know are refused, not ignored."""
    known = {f.name for f in fields(Recipe)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"recipe has unknown fields {sorted(unknown)}; was it written by a newer cnnlab?")
    return Recipe(**data)


def recipe_json(recipe: Recipe) -> str:
    return json.dumps(recipe.to_dict(), indent=2)
