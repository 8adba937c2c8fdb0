"""The loss, the optimisers' Keras defaults (and what their first call loads), and what a finished run records
about itself."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.inference import loss_fn
from cnnlab.loop import make_optimizer
from cnnlab.models import create_model
from cnnlab.recipes import get_recipe
from helpers import REPO


@pytest.mark.parametrize("loss_clip", [0.0, 1e-7])  # cross_entropy's path, and the clipped sum's
def test_label_smoothing_spreads_that_share_of_the_target_over_every_class(loss_clip):
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.tensor([0, 3, 9, 3, 5, 1])
    recipe = replace(get_recipe("fashion-cnn"), label_smoothing=0.2, loss_clip=loss_clip)
    log_probs = F.log_softmax(logits, dim=1)
    targets = torch.full((6, 10), 0.2 / 10)
    targets[torch.arange(6), labels] += 0.8  # 1 - ε on the label, ε/K on every class (the label's too)
    assert loss_fn(logits, labels, recipe).item() == pytest.approx(-(targets * log_probs).sum(1).mean().item(),
                                                                   rel=1e-6)
    assert loss_fn(logits, labels, recipe).item() > loss_fn(logits, labels, replace(recipe, label_smoothing=0.0))


def test_clipped_loss_sends_no_gradient_from_a_clipped_probability():
    """Keras computes -log(clip(p, ε, 1 - ε)): where p(label) < ε, the loss is flat and its gradient zero."""
    recipe = get_recipe("fashion-cnn")  # loss_clip 1e-7, as Keras's categorical cross-entropy
    logits = torch.zeros(2, 10)
    logits[0, 3] = -100.0  # p(3) ≈ e^-100: clipped
    logits[1, 3] = -2.0  # p(3) ≈ 0.015: not clipped
    logits.requires_grad_()
    loss_fn(logits, torch.tensor([3, 3]), recipe).backward()
    assert torch.equal(logits.grad[0], torch.zeros(10))
    expected = (torch.softmax(logits[1].detach(), 0) - F.one_hot(torch.tensor(3), 10)) / 2  # the batch mean's
    assert torch.allclose(logits.grad[1], expected, atol=1e-6)



def test_clipped_loss_of_a_sure_right_answer_is_keras_floor_and_sends_no_gradient():
    """The other end of the clip: p(label) ≈ 1 is clipped at 1 - ε, so the loss is -log(1 - ε) ≈ 1e-7, not 0."""
    recipe = get_recipe("fashion-cnn")
    logits = torch.zeros(1, 10)
    logits[0, 3] = 40.0  # p(3) = 1 - 9·e^-40
    logits.requires_grad_()
    loss = loss_fn(logits, torch.tensor([3]), recipe)
    assert loss.item() == pytest.approx(-math.log1p(-1e-7), rel=1e-4)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(1, 10))

# Keras 3's defaults (keras.optimizers.*): learning rate 1e-3 and epsilon 1e-7 for all four; RMSprop's rho 0.9
# and no momentum; Adagrad's initial accumulator 0.1; Nadam's and AdamW's betas (0.9, 0.999), and Nadam's
# momentum schedule 0.96^(0.004 t), which is PyTorch's momentum_decay=4e-3.
KERAS_DEFAULTS = {
    "rmsprop": {"alpha": 0.9, "momentum": 0.0, "centered": False},
    "adagrad": {"initial_accumulator_value": 0.1, "lr_decay": 0},
    "nadam": {"betas": (0.9, 0.999), "momentum_decay": 4e-3},
    "adamw": {"betas": (0.9, 0.999), "amsgrad": False},
}


@pytest.mark.parametrize("name", sorted(KERAS_DEFAULTS))
def test_optimizers_start_from_keras_defaults(name):
    model = create_model("mlp", (1, 28, 28), 10)
    recipe = replace(get_recipe("mnist-mlp"), optimizer=name, lr=None)  # the tutorial's recipe, another optimiser
    defaults = make_optimizer(recipe, model).defaults
    assert defaults["lr"] == 1e-3 and defaults["eps"] == 1e-7
    assert {key: defaults[key] for key in KERAS_DEFAULTS[name]} == KERAS_DEFAULTS[name]


def test_metrics_record_the_best_epoch_and_the_training_time(trained_runs):
    run_dir = trained_runs["mlp"]  # 3 epochs
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    accuracies = [float(row["val_accuracy"]) for row in history]
    best = accuracies.index(max(accuracies))  # the first epoch with the highest validation accuracy
    assert metrics["best_epoch"] == best + 1 and metrics["best_val_accuracy"] == pytest.approx(accuracies[best])
    assert metrics["final_val_accuracy"] == pytest.approx(accuracies[-1]) and metrics["epochs"] == len(history) == 3
    seconds = [float(row["seconds"]) for row in history]
    assert all(s > 0 for s in seconds)
    assert metrics["train_seconds"] == pytest.approx(sum(seconds), abs=1e-3 * len(seconds))
    assert math.isfinite(metrics["test_loss"]) and metrics["parameters"] == 407_050


def test_best_epoch_is_the_first_peak_not_the_last_epoch(trained_runs, tmp_path):
    """A validation accuracy that peaks at epoch 2, dips, and comes back to the same peak at epoch 4."""
    import io

    from rich.console import Console

    from cnnlab.data import load_dataset
    from cnnlab.history import EpochResult
    from cnnlab.runs import load_run
    from cnnlab.train import _finish

    run = load_run(trained_runs["mlp"])
    train_set, test = load_dataset("mnist", trained_runs["data"])
    history = [EpochResult(1, 1.0, 0.5, 1.0, 0.6, 2.0), EpochResult(2, 0.9, 0.6, 0.9, 0.8, 3.0),
               EpochResult(3, 0.8, 0.7, 0.8, 0.7, 4.5), EpochResult(4, 0.7, 0.8, 0.7, 0.8, 5.0)]
    _finish(tmp_path, run.recipe, run.model, history, test, train_set, torch.device("cpu"),
            Console(file=io.StringIO()), None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["best_epoch"], metrics["best_val_accuracy"], metrics["final_val_accuracy"]) == (2, 0.8, 0.8)
    assert metrics["train_seconds"] == 14.5 and metrics["epochs"] == 4


# An optimiser's first call imports torch._dynamo, which imports Triton wherever it is installed.
SCRIPT = """
import sys
from cnnlab.models import create_model
from cnnlab.recipes import get_recipe
from cnnlab.loop import make_optimizer
optimizer = make_optimizer(get_recipe("mnist-mlp"), create_model("mlp", (1, 28, 28), 10))
optimizer.zero_grad()
print("torch._dynamo" in sys.modules, sys.modules.get("triton") is not None)
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed: nothing to keep out")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU can run Triton's kernels")
def test_training_without_a_gpu_leaves_triton_out():
    """libtriton.so holds 100 MB of resident memory, and no CPU runs its kernels."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]  # torch._dynamo came in, Triton did not


def test_a_run_on_too_few_images_for_min_steps_trains_and_resumes_in_smaller_batches(tmp_path, capsys):
    """192 training images in batches of 128 are 2 steps an epoch; min_steps 6 makes them 6 batches of 32 at a
    quarter of SGD's rate: said in one line, written to recipe.json, and kept when the run is resumed."""
    from cnnlab import resume_run, train_recipe, with_overrides
    from helpers import make_idx_dataset

    data = make_idx_dataset(tmp_path / "mnist")  # 240 training images: 192 after the 20% validation split
    recipe = with_overrides(get_recipe("mnist-mlp"), {"epochs": 1, "device": "cpu", "min_steps": 6})
    run_dir = train_recipe(recipe, data, tmp_path / "runs", verbose=True)
    out = capsys.readouterr().out
    assert ("note: 192 training images make 2 steps an epoch in batches of 128, fewer than the recipe's 6 "
            "(min_steps): batches of 32 at lr 0.0025") in out
    assert "Epoch 1/1 - 6/6 - " in out
    saved = json.loads((run_dir / "recipe.json").read_text())
    assert (saved["batch_size"], saved["lr"], saved["min_steps"]) == (32, 0.0025, 6)
    resume_run(run_dir, epochs=2, verbose=True)
    out = capsys.readouterr().out
    assert "Epoch 2/2 - 6/6 - " in out and "min_steps" not in out
    assert json.loads((run_dir / "recipe.json").read_text())["batch_size"] == 32


def hundred_images():
    """100 random 8×8 grey images of two classes: in batches of 64, 2 steps an epoch."""
    from cnnlab import ImageSet

    return ImageSet(torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8), torch.arange(100) % 2, ("a", "b"))


def test_fit_fits_the_batch_to_the_data_as_a_run_does(capsys):
    from cnnlab import fit
    from cnnlab.recipes import Recipe

    train = hundred_images()
    recipe = Recipe("small", "mnist", "mlp", epochs=1, batch_size=64, min_steps=5, device="cpu")
    history = fit(create_model("mlp", (1, 8, 8), 2), train, train, recipe)
    out = capsys.readouterr().out
    assert "note: 100 training images make 2 steps an epoch in batches of 64" in out and "Epoch 1/1 - 7/7 - " in out
    assert len(history) == 1


def test_a_state_made_apart_from_fit_has_the_batch_and_rate_fit_trains_with():
    """start_state then fit(state=…), as bench/recipes.py and a resumed run do: the optimiser's rate and the
    schedule's length are the fitted recipe's (batches of 16 here), not the unfitted one's."""
    from cnnlab import fit
    from cnnlab.loop import start_state
    from cnnlab.recipes import Recipe

    train = hundred_images()
    recipe = Recipe("small", "mnist", "mlp", epochs=2, batch_size=64, lr=0.4, min_steps=5, device="cpu",
                    schedule="linear", lr_end=0.5)
    model = create_model("mlp", (1, 8, 8), 2)
    state = start_state(model, recipe, train)
    assert state.optimizer.param_groups[0]["initial_lr"] == 0.4 / 4  # batches of 16, a quarter of the rate
    fit(model, train, train, recipe, state=state, verbose=False)
    assert state.scheduler.last_epoch == 2 * 7  # two epochs of 7 steps: the schedule ran to its end
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)  # lr_end of the fitted rate


@pytest.mark.parametrize("options, message", [
    ({"size": -5}, r"^size=-5: pass the side in pixels \(2 or more\), or \(height, width\)$"),
    ({"size": 2.5}, r"^size=2.5: pass the side"),
    ({"size": (28,)}, r"^size=\(28,\): pass the side"),
    ({"size": True}, r"^size=True: pass the side"),
    ({"channels": 2}, r"^channels=2: pass 1 \(grey\) or 3 \(colour\), or leave it out$"),
    ({"channels": "1"}, r"^channels='1': pass 1"),
    ({"from_run": 3}, r"^a run is its folder's path or a Run, not int"),
])
def test_train_folder_checks_size_channels_and_from_run(tmp_path, options, message):
    """The CLI's --size and --channels are checked by argparse; train_folder's were not: -5 failed creating a tensor
    of negative size, 2.5 as 'not iterable', (28,) unpacking, channels=2 in a reshape, from_run=3 inside pathlib."""
    from cnnlab import train_folder

    with pytest.raises(CnnlabError, match=message):
        train_folder(tmp_path / "shapes", runs_dir=tmp_path / "runs", verbose=False, **options)
    assert not (tmp_path / "runs").exists()
