"""Recipes: the tutorial's values, overrides parsed by field type, bad values refused with a clear message."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cnnlab import errors
from cnnlab.data import DATASETS
from cnnlab.errors import UsageError
from cnnlab.models import MODELS
from cnnlab.recipes import (
    RECIPES,
    Recipe,
    for_data,
    get_recipe,
    graph_blocker,
    parse_value,
    recipe_from_dict,
    validate,
    with_overrides,
)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_valid_and_names_real_things(name):
    recipe = validate(RECIPES[name])
    assert (recipe.dataset in DATASETS or recipe.dataset == "folder") and recipe.model in MODELS
    assert recipe_from_dict(recipe.to_dict()) == recipe


def test_tutorial_defaults():
    fashion = get_recipe("fashion-cnn").resolved()
    assert ((fashion.optimizer, fashion.lr, fashion.eps, fashion.batch_size, fashion.epochs)
            == ("adam", 1e-3, 1e-7, 128, 10))
    assert (fashion.val_fraction, fashion.split_seed) == (0.2, 9)
    mnist = get_recipe("mnist-mlp").resolved()
    assert (mnist.optimizer, mnist.lr, mnist.momentum) == ("sgd", 0.01, 0.0)


def test_changing_the_optimizer_takes_its_default_lr():
    assert with_overrides(get_recipe("mnist-cnn"), {"optimizer": "adam"}).resolved().lr == 1e-3
    assert with_overrides(get_recipe("mnist-cnn"), {"optimizer": "adam", "lr": "0.05"}).resolved().lr == 0.05


def test_overrides_are_parsed_by_type():
    recipe = with_overrides(get_recipe("fashion-cnn"), {"epochs": "3", "lr": "1e-2", "nesterov": "yes",
                                                         "device": "cpu"})
    assert (recipe.epochs, recipe.lr, recipe.nesterov, recipe.device) == (3, 0.01, True, "cpu")


@pytest.mark.parametrize("field, value, message", [
    ("epochs", "ten", "^epochs='ten': expected int"),  # in Python's terms (the CLI's: test_the_cli_names_flags)
    ("epochs", "0", "at least 1"),
    ("batch_size", "-5", "at least 1"),
    ("lr", "-1", "positive"),
    ("optimizer", "lbfgs9", "choose one of"),
    ("val_fraction", "1.5", "strictly between"),
    ("device", "tpu", "choose auto"),
    ("nesterov", "maybe", "expected bool"),
    ("colour", "red", "unknown recipe field 'colour'"),
])
def test_bad_overrides(field, value, message):
    with pytest.raises(UsageError, match=message):
        with_overrides(get_recipe("fashion-cnn"), {field: value})


def test_the_cli_names_flags_where_python_names_fields(monkeypatch):
    monkeypatch.setattr(errors, "COMMAND_LINE", True)
    with pytest.raises(UsageError, match="^--batch-size -5: must be at least 1"):
        with_overrides(get_recipe("fashion-cnn"), {"batch_size": "-5"})
    with pytest.raises(UsageError, match="^--set min_steps=-1: must be 0"):  # a field with no flag of its own
        with_overrides(get_recipe("fashion-cnn"), {"min_steps": "-1"})
    with pytest.raises(UsageError, match="^--set translate=1e3: expected int"):
        with_overrides(get_recipe("fashion-cnn"), {"translate": "1e3"})
    monkeypatch.setattr(errors, "COMMAND_LINE", False)
    with pytest.raises(UsageError, match="^batch_size=-5: must be at least 1"):
        with_overrides(get_recipe("fashion-cnn"), {"batch_size": "-5"})


def test_unknown_recipe():
    with pytest.raises(UsageError, match="unknown recipe 'fashion-gan'"):
        get_recipe("fashion-gan")


def test_parse_none_for_optional():
    assert parse_value("lr", "default") is None
    assert parse_value("name", "none") == "none"  # a str field takes the word as it is
    with pytest.raises(UsageError, match="expected int"):
        parse_value("epochs", "none")


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("Yes", True), ("on", True),
                                         ("0", False), ("false", False), ("No", False), ("off", False)])
def test_a_bool_override_reads_yes_and_no_words(text, value):
    assert parse_value("nesterov", text) is value


def test_saved_recipe_with_unknown_fields_is_refused():
    saved = RECIPES["mnist-cnn"].to_dict() | {"warp_drive": True}
    with pytest.raises(UsageError, match="unknown fields"):
        recipe_from_dict(saved)


@pytest.mark.parametrize("field, value, message", [
    ("name", "../../etc", "not '/'"),  # the name becomes a folder under --runs-dir
    ("name", ".hidden", "not a leading '.'"),
    ("eps", "inf", "finite"),
    ("label_smoothing", "nan", "finite"),
    ("seed", "-1", "between 0 and 4294967295"),
    ("split_seed", "4294967296", "between 0 and 4294967295"),  # what NumPy's RandomState takes
    ("device", "cuda:٣", "choose auto"),  # a digit to str.isdigit, not to torch
    ("epochs", [3], "expected int"),  # values from the API are type-checked too
    ("lr", True, "expected float"),
    ("nesterov", 1, "expected bool"),
    ("min_steps", -1, "0 \\(off\\) or a number of optimiser steps"),
    ("epochs", 2.5, "expected int"),  # not cut to 2
    ("epochs", None, "expected int"),  # None only where a field may be None
    ("ema", 1.0, "a decay below 1"),  # an average that never moves
    ("translate", -1, "zero or more pixels"),
])
def test_values_that_would_fail_later_are_refused_now(field, value, message):
    with pytest.raises(UsageError, match=message):
        with_overrides(get_recipe("fashion-cnn"), {field: value})


def test_nesterov_without_momentum_is_refused_now_not_by_pytorch_at_the_first_step():
    with pytest.raises(UsageError, match="^nesterov=True: Nesterov momentum needs a momentum; set one too, e.g. "
                                         "momentum=0.9$"):
        with_overrides(get_recipe("mnist-mlp"), {"nesterov": True})  # Keras's SGD: momentum 0
    assert with_overrides(get_recipe("mnist-mlp"), {"nesterov": True, "momentum": 0.9}).nesterov
    assert with_overrides(get_recipe("fashion-cnn"), {"nesterov": True}).nesterov  # Adam: the field is sgd's only


def test_saved_recipe_is_type_checked():
    with pytest.raises(UsageError, match="batch_size='128': expected int"):
        recipe_from_dict(RECIPES["mnist-cnn"].to_dict() | {"batch_size": "128"})
    with pytest.raises(UsageError, match="lacks the fields \\['model'\\]"):
        recipe_from_dict({"name": "x", "dataset": "mnist"})
    assert recipe_from_dict(RECIPES["mnist-cnn"].to_dict() | {"lr": 1}).lr == 1.0  # JSON's 1 for 1.0


def test_cuda_graphs_take_schedules_ema_and_augmentation():
    """A replayed step reads its learning rate, EMA decay and random draws from device tensors (cnnlab.engines), so
    every shipped recipe can be graphed; fp16's host-side loss scaling still cannot."""
    assert [name for name, recipe in RECIPES.items() if graph_blocker(recipe)] == []
    for field, value in (("schedule", "cosine"), ("ema", "0.99"), ("flip", "true"), ("translate", "2")):
        assert with_overrides(get_recipe("fashion-cnn"), {"engine": "graph", "device": "cuda", field: value})
    assert graph_blocker(replace(get_recipe("fashion-fast"), autocast="fp16")) == "fp16's loss scaling"


def test_every_name_a_recipe_offers_has_what_does_its_work():
    """recipes.py owns the names; the modules below key their tables by them, and none is missing or extra."""
    import torch

    from cnnlab import data, device, inference, loop, models, recipes
    from cnnlab.augment import tta_logits
    from cnnlab.schedule import lr_factor

    assert set(recipes.DATASET_NAMES) == set(data.DATASETS)
    assert set(recipes.MODEL_NAMES) == set(models.MODELS)
    assert set(recipes.OPTIMIZERS) == set(loop.OPTIMIZERS)
    assert set(recipes.AUTOCASTS) == set(device.AUTOCASTS)
    assert set(recipes.TTA_MODES) == set(inference.TTA_PASSES)  # each mode said in words
    curves = {name: tuple(lr_factor(step, 10, name, 0.2, 0.1) for step in range(10)) for name in recipes.SCHEDULES}
    assert len(set(curves.values())) == len(recipes.SCHEDULES)  # each schedule its own curve
    calls = []
    for mode in recipes.TTA_MODES:
        calls.append(0)

        def model(batch: torch.Tensor) -> torch.Tensor:
            calls[-1] += 1
            return batch.mean(dim=(2, 3))

        tta_logits(model, torch.rand(2, 1, 8, 8), mode)
    assert calls == [1, 2, 6]  # none, flip, flip-translate: each mode its own set of copies


@pytest.mark.parametrize("fields, message", [
    ({"optimizer": "foo"}, r"^optimizer='foo': choose one of sgd, adam"),
    ({"model": "nope"}, r"^model='nope': choose one of mlp, cnn"),
    ({"dataset": "nope"}, r"^dataset='nope': choose one of mnist, fashion-mnist, cifar10$"),
    ({"epochs": "3"}, r"^epochs='3': expected int$"),
    ({"epochs": 0}, r"^epochs=0: must be at least 1$"),
    ({"lr": -1.0}, r"^lr=-1.0: must be a positive number$"),
    ({"nesterov": 1}, r"^nesterov=1: expected bool$"),
    ({"tta": "mirror"}, r"^tta='mirror': choose one of none, flip, flip-translate$"),
    ({"device": "gpu"}, r"^device='gpu': choose auto, cpu, cuda, cuda:N or mps$"),
])
def test_a_bad_field_fails_when_the_recipe_is_made(fields, message):
    """Only validate and with_overrides checked: Recipe(optimizer="foo") was made, and failed deep in training."""
    base = {"name": "mine", "dataset": "mnist", "model": "mlp"}
    with pytest.raises(UsageError, match=message):
        Recipe(**{**base, **fields})
    with pytest.raises(UsageError, match=message):
        replace(get_recipe("mnist-mlp"), **fields)


def test_a_field_takes_an_int_for_a_float_as_it_is_made():
    recipe = Recipe("mine", "mnist", "mlp", lr=1, momentum=0)
    assert recipe.lr == 1.0 and type(recipe.lr) is float and type(recipe.momentum) is float


def test_an_unknown_recipe_is_one_line():
    with pytest.raises(UsageError, match=r"^unknown recipe 'nope': choose one of mnist-mlp, .*\(cnnlab recipes lists"):
        get_recipe("nope")


def test_a_training_split_too_small_for_min_steps_gets_smaller_batches_and_a_lower_rate():
    """7,196 digits in batches of 1,024 are 8 steps an epoch; min_steps 24 halves the batch twice (29 steps), and
    SGD's rate falls in proportion, so that each image moves the weights as much as before."""
    recipe = with_overrides(get_recipe("mnist-fast"), {"min_steps": 24})
    fitted, note = for_data(recipe, 7196)
    assert (fitted.batch_size, fitted.lr) == (256, recipe.lr / 4)
    assert note == ("7,196 training images make 8 steps an epoch in batches of 1024, fewer than the recipe's 24 "
                    "(min_steps): batches of 256 at lr 0.375")
    assert replace(fitted, batch_size=1024, lr=recipe.lr) == recipe  # nothing else changed
    assert for_data(fitted, 7196) == (fitted, None)  # fitted once: a resumed run keeps its batch and rate


def test_min_steps_leaves_a_large_enough_split_and_a_recipe_without_it_alone():
    recipe = with_overrides(get_recipe("mnist-fast"), {"min_steps": 24})
    assert for_data(recipe, 54_000) == (recipe, None)  # 53 steps of 1,024
    plain = with_overrides(recipe, {"min_steps": 0})
    assert for_data(plain, 100) == (plain, None)


def test_adaptive_optimisers_scale_by_the_square_root_and_the_average_keeps_its_span_in_images():
    recipe = Recipe("small", "mnist", "cnn", optimizer="adam", batch_size=512, ema=0.999, min_steps=10)
    fitted, _ = for_data(recipe, 1280)  # 3 steps of 512; 10 of 128
    assert fitted.batch_size == 128
    assert fitted.lr == pytest.approx(1e-3 / 2)  # Keras's default rate, times the square root of 1/4
    assert fitted.ema ** 4 == pytest.approx(0.999)  # four steps now for one before: the same decay per image


@pytest.mark.parametrize("optimizer, scale", [("sgd", 1 / 4), ("adam", 1 / 2), ("adamw", 1 / 2), ("nadam", 1 / 2),
                                              ("rmsprop", 1 / 2), ("adagrad", 1 / 2)])
def test_only_sgd_scales_its_rate_in_proportion_every_adaptive_optimiser_by_the_square_root(optimizer, scale):
    recipe = Recipe("small", "mnist", "cnn", optimizer=optimizer, lr=0.4, batch_size=512, min_steps=10)
    fitted, _ = for_data(recipe, 1280)  # 512 → 128: a quarter
    assert fitted.batch_size == 128 and fitted.lr == pytest.approx(0.4 * scale)


def test_the_last_short_batch_counts_as_a_step():
    """1,000 images in batches of 128 are 8 steps (7 full, one of 104): min_steps 8 is met, nothing changes."""
    recipe = Recipe("edge", "mnist", "cnn", batch_size=128, min_steps=8)
    assert for_data(recipe, 1000) == (recipe, None)
    assert for_data(recipe, 896)[0].batch_size == 64  # 7 steps exactly: halved


def test_batches_halve_no_further_than_sixteen_images():
    fitted, note = for_data(Recipe("tiny", "mnist", "cnn", batch_size=100, min_steps=50), 40)
    assert fitted.batch_size == 16 and note is not None and "batches of 16" in note


def test_under_torchrun_a_halved_batch_still_splits_over_the_processes():
    recipe = Recipe("ddp", "mnist", "cnn", batch_size=96, min_steps=100)
    assert for_data(recipe, 960, processes=3)[0].batch_size == 24  # 96 → 48 → 24; 16, the floor, splits unevenly
    assert for_data(recipe, 960, processes=16)[0].batch_size == 32  # 96 → 48 → 32: two images a process
    assert for_data(recipe, 960)[0].batch_size == 16


def test_with_overrides_takes_a_recipes_name_and_names_a_bad_overrides_argument():
    """A name failed inside dataclasses.replace; a list of pairs with AttributeError 'list' ... 'items'."""
    assert with_overrides("mnist-mlp", {"epochs": 2}) == replace(get_recipe("mnist-mlp"), epochs=2)
    with pytest.raises(UsageError, match=r"^overrides must be a dict of field: value, not list"):
        with_overrides("mnist-mlp", [("epochs", 2)])  # type: ignore[arg-type]


def test_train_recipe_takes_a_recipes_name():
    """train_recipe('nope') failed with AttributeError 'str' object has no attribute 'dataset'."""
    from cnnlab import train_recipe

    with pytest.raises(UsageError, match="^unknown recipe 'nope'"):
        train_recipe("nope")
