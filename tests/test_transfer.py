"""Starting from a network you trained (`cnnlab train RECIPE --data FOLDER --from RUN`, issue #21): the new run's
layers start as RUN's bit for bit but the head, which is new for the folder's classes; freeze_epochs holds them
still and resumes right; model.json records the start; a RUN that cannot be a start is one line."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import cli
from cnnlab.data import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.loop import Start, fit, freeze, start_state
from cnnlab.models import create_model
from cnnlab.recipes import get_recipe, with_overrides
from cnnlab.runs import Run, load_run
from cnnlab.train import train_folder
from cnnlab.transfer import take_layers
from helpers import KILLER, REPO, assert_same_run, history, make_idx_dataset, make_shape_folder

# 6 drawings a class: 14 train / 4 validation in batches of 8 (2 steps an epoch); 3 new ones a class as test/.
TEACH = ["teach", "--batch-size", "8", "--seed", "5", "--device", "cpu", "--quiet"]
STEPS_PER_EPOCH = 2
TAKEN = ("conv2d.weight", "conv2d.bias", "dense.weight", "dense.bias")  # lab 3's CNN but its head, dense_1


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def train(*argv: str) -> Path:
    code, out, err = run_main(["train", *argv])
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    make_shape_folder(folder, 6, seed=0, part="train")
    return make_shape_folder(folder, 3, seed=1, part="test")


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> Path:
    """A finished lab-3 CNN run on fake digits: the network the tests start from."""
    digits = make_idx_dataset(tmp_path_factory.mktemp("digits"), n_train=120, n_test=30)
    return train("mnist-cnn", "--data-dir", str(digits), "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                 "--quiet", "--runs-dir", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def three_epochs(shapes, body, tmp_path_factory) -> Path:
    """3 epochs uninterrupted, the first 2 with the taken layers frozen."""
    return train(*TEACH, "--data", str(shapes), "--from", str(body), "--epochs", "3", "--set", "freeze_epochs=2",
                 "--runs-dir", str(tmp_path_factory.mktemp("runs")))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "weights.safetensors")


def test_the_taken_layers_start_as_the_runs_and_the_head_is_new(body):
    torch.manual_seed(0)
    model = create_model("cnn", (1, 28, 28), 3)
    fresh_head = model.dense_1.weight.clone()
    start = take_layers(model, load_run(body))
    assert start.layers == ("conv2d", "dense")
    theirs = weights(body)
    mine = model.state_dict()
    assert all(torch.equal(mine[key], theirs[key]) for key in TAKEN)  # bit for bit
    assert mine["dense_1.weight"].shape == (3, 128) and theirs["dense_1.weight"].shape == (10, 128)
    assert torch.equal(mine["dense_1.weight"], fresh_head)  # as built for the new classes


def test_frozen_layers_hold_still_and_learn_after(shapes, body, tmp_path):
    run_dir = train(*TEACH, "--data", str(shapes), "--from", str(body), "--epochs", "1", "--set", "freeze_epochs=1",
                    "--runs-dir", str(tmp_path))
    after, theirs = weights(run_dir), weights(body)
    assert all(torch.equal(after[key], theirs[key]) for key in TAKEN)  # a frozen epoch moved nothing taken
    assert after["dense_1.weight"].shape == (3, 128)
    assert train("--resume", str(run_dir), "--epochs", "2") == run_dir  # epoch 2 is not frozen
    assert not any(torch.equal(weights(run_dir)[key], theirs[key]) for key in TAKEN)


def test_without_freezing_every_layer_learns_from_the_start(shapes, body, tmp_path):
    run_dir = train(*TEACH, "--data", str(shapes), "--from", str(body), "--epochs", "1", "--runs-dir", str(tmp_path))
    assert not any(torch.equal(weights(run_dir)[key], weights(body)[key]) for key in TAKEN)


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("epoch", [2, 3])  # stopped in a frozen epoch, and in the first that learns
def test_a_run_stopped_and_resumed_matches_the_uninterrupted_one(epoch, shapes, body, three_epochs, tmp_path):
    argv = ["train", *TEACH, "--data", str(shapes), "--from", str(body), "--epochs", "3", "--set",
            "freeze_epochs=2", "--runs-dir", str(tmp_path)]
    script = KILLER.format(kill_at=(epoch - 1) * STEPS_PER_EPOCH + 1, signal="SIGINT", argv=argv)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 130, done.stderr
    (run_dir,) = tmp_path.iterdir()
    assert len(history(run_dir)) == epoch - 1
    assert train("--resume", str(run_dir)) == run_dir
    assert_same_run(run_dir, three_epochs)


def test_model_json_records_the_start_and_the_run_list_shows_it(body, three_epochs):
    recorded = json.loads((three_epochs / "model.json").read_text())
    assert recorded["started_from"] == {"run": body.name, "path": str(body.resolve()), "layers": ["conv2d", "dense"]}
    assert Run(three_epochs).started_from == recorded["started_from"]
    assert recorded["in_shape"] == [1, 28, 28] and recorded["preprocess"] == "digit"  # as the body's were made
    assert recorded["classes"] == ["circle", "cross", "line"]
    assert json.loads((body / "model.json").read_text())["started_from"] is None
    code, out, _ = run_main(["runs", str(three_epochs.parent)])
    assert code == 0 and f"teach (from {body.name})" in out


def test_the_report_says_where_the_run_started(body, three_epochs, tmp_path):
    from cnnlab.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(three_epochs, run_dir)
    page = write_report(run_dir, device="cpu").read_text()
    assert f"started from {body.name} ({body.resolve()}): conv2d, dense taken, the output layer new" in page


def test_cli_and_api_give_the_same_run(shapes, body, three_epochs, tmp_path):
    recipe = with_overrides(get_recipe("teach"), {"batch_size": 8, "seed": 5, "device": "cpu", "epochs": 3,
                                                  "freeze_epochs": 2})
    run_dir = train_folder(shapes, recipe, from_run=Run(body), runs_dir=tmp_path, verbose=False)
    assert_same_run(run_dir, three_epochs)


def test_a_recipe_of_another_network_takes_the_runs_with_a_note(shapes, body, tmp_path):
    code, out, err = run_main(["train", "--data", str(shapes), "--from", str(body), "--epochs", "1", "--device",
                               "cpu", "--runs-dir", str(tmp_path)])  # the folder recipe: lab 4's cnn-dropout
    assert code == 0, err
    assert f"note: {body.name} holds a cnn network, so this run trains a cnn, not the recipe's cnn-dropout" in out
    run_dir = Path(out.strip().splitlines()[-1])
    assert json.loads((run_dir / "recipe.json").read_text())["model"] == "cnn"


def test_from_a_run_on_a_data_set(body, tmp_path):
    digits = make_idx_dataset(tmp_path / "digits", n_train=60, n_test=20, seed=3)
    run_dir = train("mnist-cnn", "--data-dir", str(digits), "--from", str(body), "--epochs", "1", "--device", "cpu",
                    "--quiet", "--runs-dir", str(tmp_path / "runs"))
    assert Run(run_dir).started_from["layers"] == ["conv2d", "dense"]


def test_teach_prepares_drawings_as_mnist_digits_without_flags(shapes, tmp_path):
    run_dir = train(*TEACH, "--data", str(shapes), "--epochs", "1", "--runs-dir", str(tmp_path))
    info = json.loads((run_dir / "model.json").read_text())
    assert info["preprocess"] == "digit" and info["in_shape"] == [1, 28, 28] and info["started_from"] is None
    assert json.loads((run_dir / "recipe.json").read_text())["preprocess"] == "digit"


@pytest.mark.slow  # 40 epochs: the recipe as shipped
def test_teach_learns_drawn_shapes_from_15_examples_a_class(tmp_path):
    """The recipe's promise (the Teach view's test draws its own, with the mouse): ≥ 80% on new drawings."""
    folder = make_shape_folder(tmp_path / "shapes", 15, seed=7, part="train")
    make_shape_folder(folder, 10, seed=8, part="test")
    run = Run(train_folder(folder, "teach", runs_dir=tmp_path / "runs", verbose=False))
    assert run.metrics["test_accuracy"] >= 0.8


# ---------------------------------------------------------------------------------------------------------
# A RUN that cannot be a start: one line naming it, and no run folder left behind
# ---------------------------------------------------------------------------------------------------------
def _copy(body: Path, tmp_path: Path, *remove: str) -> Path:
    run_dir = tmp_path / "copy"
    shutil.copytree(body, run_dir)
    for name in remove:
        (run_dir / name).unlink()
    return run_dir


def _damaged(body: Path, tmp_path: Path) -> Path:
    run_dir = _copy(body, tmp_path)
    (run_dir / "weights.safetensors").write_bytes(b"not safetensors")
    return run_dir


def _other_shape(body: Path, tmp_path: Path) -> Path:
    """A finished run whose network takes 3×16×16 colour images."""
    from cnnlab.runs import ModelInfo, save_run_files, save_weights

    run_dir = tmp_path / "colour"
    run_dir.mkdir()
    save_run_files(run_dir, get_recipe("cifar10-cnn"), ModelInfo("cnn", (3, 16, 16), tuple("abcd"), "cifar10"),
                   torch.device("cpu"))
    save_weights(run_dir / "weights.safetensors", create_model("cnn", (3, 16, 16), 4))
    (run_dir / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    return run_dir


BAD_RUNS = {
    "missing": (lambda body, tmp: tmp / "no-such-run", "no such run folder"),
    "not a run": (lambda body, tmp: body.parent, "not a cnnlab run folder"),
    "unfinished": (lambda body, tmp: _copy(body, tmp, "weights.safetensors", "metrics.json"),
                   "its training has not finished; finish it first (`cnnlab train --resume"),
    "no weights": (lambda body, tmp: _copy(body, tmp, "weights.safetensors", "checkpoint.safetensors"),
                   "has no trained weights"),
    "damaged": (lambda body, tmp: _damaged(body, tmp), "cannot start from it: "),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_a_run_that_cannot_be_a_start_is_one_line(case, shapes, body, tmp_path):
    make, says = BAD_RUNS[case]
    run = make(body, tmp_path)
    code, out, err = run_main(["train", *TEACH, "--data", str(shapes), "--from", str(run), "--runs-dir",
                               str(tmp_path / "runs")])
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"cnnlab: error: --from {run}: ") and says in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    with pytest.raises(CnnlabError, match=f"^from_run {re.escape(str(run))}: "):  # in Python's terms from Python
        train_folder(shapes, "teach", from_run=run, runs_dir=tmp_path / "runs", verbose=False)


def test_images_of_another_shape_than_the_run_takes_are_refused(shapes, body, tmp_path):
    code, _, err = run_main(["train", *TEACH, "--data", str(shapes), "--from", str(body), "--size", "32",
                             "--runs-dir", str(tmp_path / "runs")])
    assert code == 1 and err == (f"cnnlab: error: --from {body}: its network takes 1×28×28 images, the data are "
                                 "?×32×32; leave out --size, --channels and --preprocess (the images are made as "
                                 "the run's were)\n")
    digits = make_idx_dataset(tmp_path / "digits", n_train=20, n_test=10)
    colour = _other_shape(body, tmp_path)
    code, _, err = run_main(["train", "mnist-cnn", "--data-dir", str(digits), "--from", str(colour), "--runs-dir",
                             str(tmp_path / "runs"), "--quiet"])
    assert code == 1 and err.count("\n") == 1 and f"--from {colour}: its network takes 3×16×16 images" in err
    assert not list((tmp_path / "runs").iterdir())  # refused before its first checkpoint: no folder left


def test_resume_continues_its_own_start_and_takes_no_other(body):
    code, out, err = run_main(["train", "--resume", str(body), "--from", str(body)])
    assert code == 2 and out == "" and "no --from" in err and err.count("\n") == 1


def test_a_folder_of_colour_photos_is_made_grey_as_the_run_says(body, tmp_path):
    from PIL import Image

    for index, colour in enumerate(["red", "blue"]):  # a red square, a blue bar, on white
        (tmp_path / "photos" / colour).mkdir(parents=True)
        for n in range(6):
            photo = Image.new("RGB", (40, 30), "white")
            photo.paste(colour, (5 + n, 5, 20 + n + 10 * index, 25 - 10 * index))
            photo.save(tmp_path / "photos" / colour / f"{n}.png")
    run_dir = train(*TEACH, "--data", str(tmp_path / "photos"), "--from", str(body), "--epochs", "1",
                    "--runs-dir", str(tmp_path / "runs"))
    assert json.loads((run_dir / "model.json").read_text())["in_shape"] == [1, 28, 28]


# ---------------------------------------------------------------------------------------------------------
# Freezing a network with BatchNorm: its statistics hold still too, as Keras's frozen BatchNormalization's do
# ---------------------------------------------------------------------------------------------------------
def test_a_frozen_batchnorm_keeps_its_statistics():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8, generator=generator)
    data = ImageSet(images, torch.arange(24) % 3, ("a", "b", "c"))
    recipe = with_overrides(get_recipe("mnist-cpu"), {"epochs": 1, "batch_size": 8, "freeze_epochs": 1,
                                                      "device": "cpu", "autocast": "off"})
    torch.manual_seed(0)
    model = create_model("bn-cnn", (1, 28, 28), 3)
    head = "dense_1"
    before = {key: value.clone() for key, value in model.state_dict().items()}
    layers = tuple(dict.fromkeys(key.rpartition(".")[0] for key in before if not key.startswith(head)))
    state = start_state(model, recipe, data, "cpu", Start(layers, None))
    fit(model, data, data, recipe, "cpu", state=state, verbose=False)
    after = model.state_dict()
    assert all(torch.equal(after[key], before[key]) for key in before if not key.startswith(head))
    assert not torch.equal(after[f"{head}.weight"], before[f"{head}.weight"])


def test_freezing_leaves_what_never_learns_alone():
    model = create_model("airbench", (1, 28, 28), 3)
    fixed = {name for name, p in model.named_parameters() if not p.requires_grad}  # the whitening, the norm scales
    assert fixed
    layers = tuple(dict.fromkeys(key.rpartition(".")[0] for key in model.state_dict() if not key.startswith("head")))
    data = ImageSet(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.arange(8) % 3, ("a", "b", "c"))
    recipe = with_overrides(get_recipe("fashion-fast"), {"device": "cpu", "autocast": "off"})
    state = start_state(model, recipe, data, "cpu", Start(layers, None))
    assert state.taken and fixed.isdisjoint(state.taken)
    freeze(model, state.taken, frozen=True)
    freeze(model, state.taken, frozen=False)
    assert {name for name, p in model.named_parameters() if not p.requires_grad} == fixed
