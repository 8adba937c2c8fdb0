"""The recipes beyond the tutorial: each trains a few steps on CPU on fake data and its loss falls, and a run
that normalises keeps its statistics, so evaluation after reloading gives the numbers training gave."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from cnnlab import cli, get_recipe, load_run
from cnnlab.data import load_dataset, split
from cnnlab.inference import evaluate
from cnnlab.loop import fit
from cnnlab.models import create_model
from cnnlab.recipes import RECIPES, with_overrides
from cnnlab.schedule import lr_factor

TUTORIAL = {"mnist-mlp", "mnist-cnn", "fashion-cnn", "cifar10-cnn"}
FAST = sorted(set(RECIPES) - TUTORIAL - {"teach"})  # teach: a few images of your own (tests/test_transfer.py)


def fake_training_set(recipe, fake_mnist, fake_cifar):
    """The fake files of the recipe's kind of image: CIFAR-10's for colour, MNIST's for 28×28 grey."""
    if recipe.dataset == "cifar10":
        return load_dataset("cifar10", fake_cifar)[0]
    return load_dataset("mnist", fake_mnist)[0]


@pytest.mark.parametrize("name", FAST)
def test_recipe_trains_on_cpu_and_its_loss_falls(name, fake_mnist, fake_cifar):
    recipe = with_overrides(RECIPES[name], {"device": "cpu", "epochs": 3, "batch_size": 16})
    train_all = fake_training_set(recipe, fake_mnist, fake_cifar)
    train, val = split(train_all.subset(torch.arange(40)), 0.2, 0)  # 32 images: 2 steps an epoch
    torch.manual_seed(0)
    model = create_model(recipe.model, tuple(train.images.shape[1:]), 10)
    history = fit(model, train, val, recipe, "cpu", verbose=False)
    assert history[-1].loss < history[0].loss
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["cifar10-fast", "fashion-fast"])
def test_gpu_recipe_trains_on_cuda_with_its_precision_and_layout(name, fake_mnist, fake_cifar):
    recipe = with_overrides(RECIPES[name], {"device": "cuda", "epochs": 3, "batch_size": 32})
    train, val = split(fake_training_set(recipe, fake_mnist, fake_cifar), 0.2, 0)
    model = create_model(recipe.model, tuple(train.images.shape[1:]), 10)
    history = fit(model, train, val, recipe, "cuda", verbose=False)
    assert history[-1].loss < history[0].loss
    assert next(model.parameters()).is_cuda


TTA_CALLS = {"none": 1, "flip": 2, "flip-translate": 6}  # forward passes per evaluated batch


@pytest.mark.parametrize("name", FAST)
def test_fast_recipes_use_what_they_declare(name, fake_mnist, fake_cifar):
    """Training sees standardised images, steps along the recipe's schedule, and validation averages the
    declared test-time copies: watched from inside the network, on the plain engine in fp32."""
    declared = RECIPES[name]
    assert declared.description and declared.normalize and declared.schedule != "constant", name
    assert declared.loss_clip == 0 and (declared.tta != "none") == declared.flip, name  # mirrors at test if trained so
    recipe = with_overrides(declared, {"device": "cpu", "epochs": 2, "batch_size": 8, "engine": "plain",
                                       "autocast": "off"})
    train, val = split(fake_training_set(recipe, fake_mnist, fake_cifar).subset(torch.arange(40)), 0.2, 0)
    torch.manual_seed(0)
    model = create_model(recipe.model, tuple(train.images.shape[1:]), 10)
    inputs = {"train": [], "eval": []}
    next(model.children()).register_forward_pre_hook(  # the first layer: what the network is given
        lambda layer, args: inputs["train" if layer.training else "eval"].append(args[0].detach().clone()))
    rates = []
    hook = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: rates.append(
        optimizer.param_groups[0]["lr"]))
    try:
        fit(model, train, val, recipe, "cpu", verbose=False)
    finally:
        hook.remove()

    seen = torch.cat(inputs["train"]).transpose(0, 1).flatten(1)  # (C, every pixel of every training batch)
    assert seen.mean(1).abs().max() < 0.25 and (seen.std(1) - 1).abs().max() < 0.25  # standardised, not [0, 1]
    steps = 2 * 4  # 32 training images in batches of 8, twice
    expected = [recipe.lr * lr_factor(step, steps, recipe.schedule, recipe.warmup, recipe.lr_end)
                for step in range(steps)]
    assert rates == pytest.approx(expected) and len(set(rates)) > 2
    assert len(inputs["eval"]) == 2 * TTA_CALLS[recipe.tta]  # one batch of 8 validation images, each epoch
    if recipe.tta != "none":
        assert torch.equal(inputs["eval"][1], inputs["eval"][0].flip(3))  # the image, then its mirror
    assert not RECIPES["mnist-fast"].flip and not RECIPES["mnist-cpu"].flip  # a mirrored digit is another symbol


def test_normalised_run_keeps_its_statistics_and_reloads(fake_mnist, runs_dir, capsys):
    args = ["train", "fashion-cpu", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir), "--epochs", "2",
            "--batch-size", "32", "--device", "cpu", "--set", "dataset=mnist", "--set", "ema=0.9"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    run_dir = out.strip().splitlines()[-1]
    info = json.loads((runs_dir / run_dir.split("/")[-1] / "model.json").read_text())
    mean, std = info["normalization"]["mean"][0], info["normalization"]["std"][0]
    assert 0.05 < mean < 0.6 and 0.05 < std < 0.6  # the fake digits: dark noise with one bright block

    run = load_run(run_dir)
    assert run.info.normalization.mean == (mean,)
    _, test = load_dataset("mnist", fake_mnist)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert evaluate(run, test)["accuracy"] == \
        metrics["test_accuracy"]
    test_line = next(line for line in out.splitlines() if line.startswith("Test loss"))
    assert cli.main(["evaluate", run_dir, "--data-dir", str(fake_mnist), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == test_line


def test_a_last_batch_of_one_image_joins_the_batch_before_it(fake_mnist, runs_dir, capsys):
    from cnnlab.loop import batch_bounds

    assert batch_bounds(257, 128) == [0, 128, 257] and batch_bounds(258, 128) == [0, 128, 256, 258]
    assert batch_bounds(128, 128) == [0, 128] and batch_bounds(1, 128) == [0, 1]
    # 240 fake digits → 192 training images; batches of 191 would leave one image, which BatchNorm refuses
    code = cli.main(["train", "fashion-cpu", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                     "--set", "dataset=mnist", "--epochs", "1", "--batch-size", "191", "--quiet"])
    assert code == 0, capsys.readouterr().err


def test_per_class_figures_agree_with_the_test_accuracy_under_bf16_and_tta(fake_mnist, runs_dir, capsys):
    from cnnlab.evaluation import evaluate_run

    code = cli.main(["train", "fashion-cpu", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                     "--set", "dataset=mnist", "--epochs", "1", "--quiet"])
    assert code == 0
    run_dir = capsys.readouterr().out.strip()
    evaluation, _ = evaluate_run(run_dir, data_dir=fake_mnist, device="cpu")
    # the confusion matrix comes from predict, the accuracy from evaluate: the same computation, the same count
    assert evaluation.confusion.trace().item() == round(evaluation.accuracy * evaluation.confusion.sum().item())


@pytest.mark.parametrize("native", [False, True])
def test_autocast_auto_picks_bf16_only_where_the_cpu_computes_it(fake_mnist, runs_dir, capsys, monkeypatch, native):
    from cnnlab import device

    monkeypatch.setattr(device, "native_bf16", lambda device: native)  # the capability probe, faked both ways
    assert get_recipe("fashion-cpu").autocast == get_recipe("mnist-cpu").autocast == "auto"
    # The CPU's rule, on the CPU: with CUDA present 'auto' would train there and add the engine's note.
    code = cli.main(["train", "fashion-cpu", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                     "--set", "dataset=mnist", "--epochs", "1", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])
    assert json.loads((run_dir / "recipe.json").read_text())["autocast"] == ("bf16" if native else "off")
    assert ("(bf16 autocast)" in out.splitlines()[0]) == native
    assert not [line for line in out.splitlines() if line.startswith("note:")]


def test_bf16_asked_for_on_a_cpu_without_it_says_so_in_the_users_terms(fake_mnist, runs_dir, capsys, monkeypatch):
    from cnnlab import device, errors

    monkeypatch.setattr(device, "native_bf16", lambda device: False)
    # The CPU's note, on the CPU: on CUDA it would name the card, and the engine's note would join it.
    code = cli.main(["train", "fashion-cpu", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                     "--set", "dataset=mnist", "--epochs", "1", "--set", "autocast=bf16", "--device", "cpu"])
    assert code == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: this CPU has no AVX512-BF16 or AMX, so bf16 autocast is emulated and slow here; "
                     "--set autocast=auto trains in fp32 where bf16 is slow"]
    monkeypatch.setattr(errors, "COMMAND_LINE", False)  # in a notebook: the recipe field, not the flag
    assert "autocast='auto' in the recipe" in device.precision_note(torch.device("cpu"), "bf16")
    assert device.precision_note(torch.device("cpu"), "off") is None


def test_norm_stats_are_taken_afresh_with_the_current_weights():
    from cnnlab.loop import renew_norm_stats

    torch.manual_seed(0)
    model = create_model("bn-cnn", (1, 28, 28), 10)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    recipe = with_overrides(RECIPES["fashion-cpu"], {"norm_stats": 32, "batch_size": 32, "autocast": "off"})
    inputs = images.float() / 255
    model.train()
    with torch.no_grad():
        batch_logits = model(inputs)  # what the network computes with this batch's own statistics
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.fill_(3.0)  # running averages that trail the weights far behind
        stale = model.eval()(inputs)
        renew_norm_stats(model, images, recipe, torch.device("cpu"), None)
        fresh = model.eval()(inputs)
    assert not torch.allclose(stale, batch_logits, atol=0.5)
    assert torch.allclose(fresh, batch_logits, atol=0.05)  # only the unbiased variance's 32/31 apart
    assert all(module.momentum == 0.1 for module in model.modules()
               if isinstance(module, torch.nn.modules.batchnorm._BatchNorm))
    assert RECIPES["mnist-fast"].norm_stats and not RECIPES["fashion-fast"].norm_stats
