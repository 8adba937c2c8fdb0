"""The course beside the learner: its figures in one table, compared with a run's as text and HTML, and the
labs' exercise checks, which say what is wrong and never raise."""
from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import cnnlab
from cnnlab.course import COURSE, check_exercise, compare_with_course
from cnnlab.errors import CnnlabError
from cnnlab.history import EpochResult


def epochs(*val_accuracies: float) -> list[EpochResult]:
    return [EpochResult(i, 0.5, 0.9, 0.4, v, 1.0) for i, v in enumerate(val_accuracies, 1)]


def test_the_course_table_holds_labs_2_to_5_as_the_course_printed_them():
    assert {name: result.lab for name, result in COURSE.items()} == \
        {"mnist-mlp": 2, "mnist-cnn": 3, "fashion-cnn": 4, "cifar10-cnn": 5}
    assert COURSE["mnist-mlp"].test_accuracy == 0.9224 and COURSE["mnist-cnn"].val_accuracy == 0.9433
    assert COURSE["fashion-cnn"].val_accuracy == 0.9191
    assert (COURSE["cifar10-cnn"].val_accuracy, COURSE["cifar10-cnn"].best_val_accuracy) == (0.6707, 0.6804)


def test_comparison_puts_the_course_beside_the_run_in_text_and_html():
    recipe = cnnlab.get_recipe("mnist-mlp")
    comparison = compare_with_course(recipe, epochs(*[0.9] * 9, 0.91), {"loss": 0.3, "accuracy": 0.9251})
    text = str(comparison)
    assert "Lab 2" in text and "0.9224" in text and "0.9251" in text and "0.9183" in text
    assert "like with like" not in text  # both ran 10 epochs
    html = comparison._repr_html_()
    assert "<td>test accuracy</td><td>0.9224</td><td>0.9251</td>" in html and "\x1b[" not in repr(comparison)


def test_comparison_shows_the_best_epoch_where_it_is_not_the_last_and_says_when_epochs_differ():
    text = str(compare_with_course("cifar10-cnn", epochs(0.5, 0.62, 0.6)))
    assert "0.6804 (epoch 9)" in text and "0.6200 (epoch 2)" in text
    assert "set EPOCHS = 10" in text and "test accuracy" in text  # no scores: the run's test cell reads —


def test_comparison_refuses_a_recipe_the_course_did_not_run_in_one_line():
    with pytest.raises(CnnlabError, match="no results for recipe 'fashion-cpu'"):
        compare_with_course("fashion-cpu", epochs(0.9))


def mlp(units: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, units), nn.ReLU(), nn.Linear(units, 10))


def cnn(filters: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, filters, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(filters * 14 * 14, 128), nn.ReLU(), nn.Linear(128, 10))


@pytest.mark.parametrize("name, answers, passed, says", [
    ("lab2-hidden-units", {"model": mlp(128), "guess": 101_770}, True, "101,770 parameters, as you predicted"),
    ("lab2-hidden-units", {"model": mlp(512), "guess": 101_770}, False, "has 512 units: build the model with 128"),
    ("lab2-hidden-units", {"model": mlp(128), "guess": 100_480}, False, "you predicted 100,480"),
    ("lab2-hidden-units", {"model": mlp(128), "guess": "lots"}, False, "as a whole number"),
    ("lab3-filters", {"model": cnn(16), "guess": 402_986}, True, "402,986 parameters"),
    ("lab3-filters", {"model": cnn(32), "guess": 0}, False, "has 32 filters: build it with 16"),
    ("lab1-flatten-colour", {"flat": np.arange(3072), "rgb": np.arange(3072).reshape(32, 32, 3)}, True, "3,072"),
    ("lab1-flatten-colour", {"flat": np.zeros((32, 32, 3)), "rgb": np.zeros((32, 32, 3))}, False, "(32, 32, 3)"),
    ("lab5-best-epoch", {"history": epochs(0.5, 0.7, 0.6), "guess": 2}, True, "epoch 2 (0.7000)"),
    ("lab5-best-epoch", {"history": epochs(0.5, 0.7, 0.6), "guess": 3}, False, "epoch 3 is not where"),
    ("lab4-no-dropout", {"model": mlp(8), "history": epochs(0.8), "with_dropout": epochs(0.85, 0.8)}, True,
     "at epoch 1, train accuracy minus validation accuracy is +0.1000 without dropout and +0.0500 with it"),
    ("lab4-no-dropout", {"model": nn.Sequential(nn.Dropout(0.3)), "history": [], "with_dropout": []}, False,
     "still has a Dropout(0.3) layer"),
    ("lab4-no-dropout", {"model": None, "history": [], "with_dropout": []}, False, "could not check it"),
    ("lab9", {}, False, "there is no exercise 'lab9'"),
])
def test_each_check_passes_on_the_intended_change_and_otherwise_says_what_is_wrong(name, answers, passed, says):
    check = check_exercise(name, **answers)  # never raises, whatever it is handed
    assert check.passed is passed and says in check.message, check.message
    assert str(check).startswith("✓ Done" if passed else "✗ Not yet")


def test_the_intended_models_have_the_counts_the_checks_expect():
    assert sum(p.numel() for p in mlp(512).parameters()) == 407_050  # the course's lab 2
    assert sum(p.numel() for p in cnn(32).parameters()) == 804_554  # the course's lab 3
