"""End to end through the CLI's main(): train → evaluate, the run folder, reloading, and clear errors."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab import cli, get_recipe, load_run
from cnnlab.data import DATASETS, load_dataset
from cnnlab.inference import evaluate, loss_fn
from cnnlab.recipes import RECIPES, Recipe
from helpers import MNIST_SAMPLE, REPO, RUN_FILES, history


def train(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_evaluate(fake_mnist, runs_dir, capsys):
    code, out, _ = train(capsys, "mnist-cnn", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                         "--epochs", "2", "--optimizer", "adam", "--batch-size", "32", "--device", "cpu")
    assert code == 0
    run_dir = runs_dir / out.strip().splitlines()[-1].split("/")[-1]
    assert out.strip().splitlines()[-1] == str(run_dir)  # the last line is the run folder
    assert "Total params: 804,554" in out
    assert "Epoch 2/2" in out and "val_accuracy" in out
    assert "" not in out.splitlines()  # into a pipe or file: no progress bar, nor the empty line it would leave
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}

    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5  # the fake digits are easy: the network must have learned
    assert json.loads((run_dir / "recipe.json").read_text())["lr"] == 1e-3

    test_line = next(line for line in out.splitlines() if line.startswith("Test loss"))
    assert cli.main(["evaluate", str(run_dir), "--data-dir", str(fake_mnist), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == test_line  # the same numbers training wrote


def test_reloaded_model_computes_the_same(fake_mnist, runs_dir, capsys):
    # On the CPU, where the reloaded run computes: a test loss computed on CUDA may differ in its last bit (its /255
    # multiplies by a reciprocal, its products and means sum in other orders).
    code, out, _ = train(capsys, "mnist-mlp", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                         "--epochs", "1", "--quiet", "--device", "cpu")
    assert code == 0 and out.count("\n") == 1  # --quiet prints only the run folder
    run = load_run(out.strip())
    _, test = load_dataset("mnist", fake_mnist)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    reloaded = evaluate(run, test)  # with the run's own recipe and normalisation
    # The loss, to the last bit: the accuracy of a barely trained model is the same for most wrong weights.
    assert reloaded["loss"] == metrics["test_loss"] and reloaded["accuracy"] == metrics["test_accuracy"]
    assert run.history[0].epoch == 1 and run.info.classes == tuple("0123456789")


def test_same_seed_same_history(fake_mnist, runs_dir, capsys):
    """Bit for bit, every number of every epoch and every weight; and another seed gives another run."""
    runs = []
    for seed in ("5", "5", "6"):
        code, out, _ = train(capsys, "fashion-cnn", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                             "--epochs", "2", "--quiet", "--set", "dataset=mnist", "--seed", seed, "--device", "cpu")
        assert code == 0
        run_dir = Path(out.strip())
        runs.append((history(run_dir), load_run(run_dir).model.state_dict()))  # full precision
    (first, weights), (same, same_weights), (other, other_weights) = runs
    assert same == first and len(first) == 2
    assert all(torch.equal(same_weights[key], weights[key]) for key in weights)
    assert other != first
    assert not torch.equal(other_weights["conv2d.weight"], weights["conv2d.weight"])


@pytest.mark.parametrize("args, code, message", [
    (["train", "mnist-gan"], 2, "unknown recipe 'mnist-gan'"),
    (["train", "mnist-cnn", "--epochs", "many"], 2, "--epochs 'many': expected int"),
    (["train", "mnist-cnn", "--set", "lr"], 2, "expected FIELD=VALUE"),
    (["train", "mnist-cnn", "--set", "min_steps=-1"], 2, "--set min_steps=-1: must be 0 (off)"),  # no flag of its own
    (["train", "mnist-cnn", "--device", "quantum"], 2, "choose auto"),
    (["evaluate", "/no/such/run"], 1, "no such run folder"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_clear_errors(args, code, message, capsys):
    assert cli.main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_recipe_flags_are_the_train_flags_named_by_errors():
    """An error names a field by its flag where `cnnlab train` has one (cnnlab.recipes.as_given), else by --set."""
    from cnnlab.recipes import RECIPE_FLAGS

    train_parser = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {option for action in train_parser._actions for option in action.option_strings}
    fields = {f"--{name.replace('_', '-')}" for name in Recipe.__dataclass_fields__}
    assert {f"--{name.replace('_', '-')}" for name in RECIPE_FLAGS} == flags & fields - {"--preprocess"}


def test_unwritable_runs_dir_fails_before_training(fake_mnist, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = train(capsys, "mnist-cnn", "--data-dir", str(fake_mnist), "--runs-dir", str(blocker / "runs"))
    assert code == 1 and "--runs-dir" in err and err.count("\n") == 1
    code, _, err = train(capsys, "mnist-cnn", "--data-dir", str(fake_mnist), "--runs-dir", str(blocker))
    assert code == 1 and err == (f"cnnlab: error: cannot write runs under {blocker} (a file, not a folder); choose "
                                 "another folder with --runs-dir\n")


def test_names_are_shown_as_they_are_not_read_as_rich_markup(digit_run, tmp_path, capsys):
    """A run, a class or a folder may be named '[red]…' (a folder of images names the classes): shown so, not
    taken for a colour and hidden."""
    from cnnlab.display import plain_console

    runs = tmp_path / "runs"
    shutil.copytree(digit_run, runs / "[bold red]mine")
    assert cli.main(["runs", str(runs)]) == 0
    assert "[bold red]mine" in capsys.readouterr().out
    assert cli.main(["runs", str(runs / "[bold red]mine" / "recipe.json")]) == 1  # a file: not "no such folder"
    assert capsys.readouterr().err.startswith(f"cnnlab: error: {runs / '[bold red]mine' / 'recipe.json'}: a file, "
                                              "not a folder; training writes runs under ./runs")
    plain_console().print("class [red] → [bold]b")
    assert capsys.readouterr().out == "class [red] → [bold]b\n"


def test_recipes_lists_every_recipe(capsys):
    assert cli.main(["recipes"]) == 0
    rows = {cells[0]: cells[1:] for line in capsys.readouterr().out.splitlines()
            if len(cells := [cell.strip() for cell in line.strip("│ ").split("│")]) == 7}
    assert set(RECIPES) <= set(rows)
    assert rows["fashion-cnn"] == ["fashion-mnist", "cnn-dropout", "adam", "0.001", "10", "128"]  # lab 4, LABS.md


@pytest.mark.parametrize("name", ["fashion-cnn", "cifar10-fast"])
def test_recipes_name_shows_every_field_of_the_recipe(name, capsys):
    assert cli.main(["recipes", name]) == 0
    rows = dict(cells for line in capsys.readouterr().out.splitlines()
                if len(cells := [cell.strip() for cell in line.strip("│ ").split("│")]) == 2)
    expected = get_recipe(name).resolved().to_dict()
    assert {field: rows.get(field) for field in expected} == {field: str(value) for field, value in expected.items()}


def test_keras_clipped_loss_matches_cross_entropy_when_nothing_is_clipped():
    logits = torch.randn(8, 10)
    labels = torch.arange(8)
    recipe = get_recipe("fashion-cnn")
    assert torch.allclose(loss_fn(logits, labels, recipe), F.cross_entropy(logits, labels), atol=1e-6)
    confident = torch.zeros(1, 10)
    confident[0, 3] = -100.0  # p(label) ≈ e^-100: Keras clips it at 1e-7, so the loss is -log(1e-7)
    assert loss_fn(confident, torch.tensor([3]), recipe).item() == pytest.approx(-torch.log(torch.tensor(1e-7)).item())


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_SAMPLE.exists(), reason="../shared/datasets/mnist-sample not present")
def test_short_run_on_the_real_mnist_sample(runs_dir, capsys):
    code, out, _ = train(capsys, "mnist-cnn", "--data-dir", str(MNIST_SAMPLE), "--runs-dir", str(runs_dir),
                         "--epochs", "1", "--optimizer", "adam", "--quiet")
    assert code == 0
    metrics = json.loads((runs_dir / out.strip().split("/")[-1] / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] > 0.85 and metrics["test_accuracy"] > 0.85


def test_cifar_recipe_end_to_end(fake_cifar, runs_dir, capsys):
    code, out, _ = train(capsys, "cifar10-cnn", "--data-dir", str(fake_cifar), "--runs-dir", str(runs_dir),
                         "--epochs", "1", "--batch-size", "50")
    assert code == 0 and "Total params: 2,125,578" in out
    run_dir = runs_dir / out.strip().splitlines()[-1].split("/")[-1]
    assert RUN_FILES <= {path.name for path in run_dir.iterdir()}
    info = json.loads((run_dir / "model.json").read_text())
    assert info["in_shape"] == [3, 32, 32] and info["model"] == "cnn-deep"
    assert info["classes"] == list(DATASETS["cifar10"].classes)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test_loss"]) and 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 1



@pytest.mark.parametrize("command", [["inspect", "{image}"], ["recipes", "fashion-cnn"]])  # print(), rich
def test_a_reader_that_goes_away_stops_the_command_quietly(tmp_path, command):
    """`cnnlab inspect IMAGE | head -1`, the pipe closed before cnnlab writes: no error line, exit code 1."""
    Image.new("L", (8, 8), 200).save(tmp_path / "grey.png")
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read what cnnlab writes
    argv = [part.format(image=tmp_path / "grey.png") for part in command]
    done = subprocess.run([sys.executable, "-m", "cnnlab.cli", *argv], stdout=writer, stderr=subprocess.PIPE,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")


def test_python_dash_m_cnnlab_is_the_command_with_its_exit_codes():
    """`python -m cnnlab`, where the scripts folder is not on PATH: the same output and exit codes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listed = subprocess.run([sys.executable, "-m", "cnnlab", "recipes"], capture_output=True, text=True, cwd=REPO,
                            env=env)
    assert listed.returncode == 0 and "fashion-cnn" in listed.stdout
    wrong = subprocess.run([sys.executable, "-m", "cnnlab", "train", "no-such-recipe"], capture_output=True,
                           text=True, cwd=REPO, env=env)
    assert wrong.returncode == 2 and wrong.stderr.startswith("cnnlab: error: unknown recipe 'no-such-recipe'")


def test_the_command_freezes_the_collector_only_on_its_way_out(monkeypatch):
    """`cnnlab` and `python -m cnnlab` enter through run(): main's exit code, after gc.freeze (a quick exit). main
    is what tests and notebooks call, in a process that lives on: run alone freezes."""
    import gc

    import tomllib

    calls = []
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 3)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert (exit_.value.code, calls) == (3, ["main", "freeze"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"cnnlab": "cnnlab.cli:run"}
    assert "run()" in (REPO / "cnnlab" / "__main__.py").read_text()


@pytest.mark.slow
def test_commands_on_a_run_read_the_data_folder_it_was_trained_on(trained_runs, tmp_path, monkeypatch, capsys):
    """No --data-dir: evaluate, predict --random, explain and report find the test images where training did."""
    import cnnlab.data

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download the data set")

    monkeypatch.setattr(cnnlab.data, "fetch", no_download)
    run_dir = str(shutil.copytree(trained_runs["cnn"], tmp_path / "run"))
    assert cli.main(["evaluate", run_dir, "--device", "cpu"]) == 0
    assert "Test loss" in capsys.readouterr().out
    assert cli.main(["predict", run_dir, "--random", "3", "--json", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [set(json.loads(line)) for line in lines] == [{"label", "class", "correct"}] * 3
    for argv in (["explain", run_dir], ["report", run_dir]):
        assert cli.main([*argv, "--device", "cpu"]) == 0, argv


def test_a_vanished_data_folder_is_named_with_what_to_pass(trained_runs, tmp_path, capsys):
    data = shutil.copytree(trained_runs["data"], tmp_path / "data")
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    environment = json.loads((run_dir / "environment.json").read_text())
    (run_dir / "environment.json").write_text(json.dumps({**environment, "data_dir": str(data)}))
    shutil.rmtree(data)
    assert cli.main(["evaluate", str(run_dir), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(data) in err and "--data-dir" in err
    assert cli.main(["evaluate", str(run_dir), "--device", "cpu", "--data-dir", str(trained_runs["data"])]) == 0


# ---------------------------------------------------------------------------------------------------------
# Messages that say what to do (issue #22, point 12)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["serve", "{run}", "--port", "70000"], "--port: '70000': expected a port from 0 to 65535 (0: any free one)"),
    (["studio", "{runs}", "--port", "-1"], "argument --port: '-1': expected a port from 0 to 65535"),
    (["studio", "{runs}", "--port", "http"], "argument --port: 'http': expected a port from 0 to 65535"),
    (["predict", "{run}", "x.png", "--device", "bogus"], "--device: 'bogus': choose auto, cpu, cuda, cuda:N or mps"),
    (["serve", "{run}", "--device", "gpu"], "argument --device: 'gpu': choose auto, cpu, cuda, cuda:N or mps"),
    (["evaluate", "{run}", "--device", "cuda:x"], "--device: 'cuda:x': choose auto, cpu, cuda, cuda:N or mps"),
])
def test_a_bad_port_or_device_says_what_to_give(args, message, digit_run, capsys):
    """--port 70000 and --device bogus reached the socket and PyTorch, whose errors came out as generic lines."""
    code = cli.main([arg.format(run=digit_run, runs=digit_run.parent) for arg in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "--debug" not in err


@pytest.mark.parametrize("error, message", [
    (13, "cannot write there (Permission denied); evaluate writes into the run folder: copy it to a folder of"),
    (30, "cannot write there (Read-only file system); evaluate writes into the run folder: copy it"),
    (28, "No space left on device; the disk is full: free some space"),
])
def test_evaluate_where_it_cannot_write_says_what_to_do(trained_runs, tmp_path, monkeypatch, capsys, error, message):
    """A read-only run folder gave `error: PermissionError: [Errno 13] … (--debug shows the traceback)`. (The
    tests run as root, whom permissions do not stop: the write is made to fail as it would.)"""
    import cnnlab.evaluation

    def refused(evaluation, test, folder):
        raise OSError(error, os.strerror(error), str(folder))

    monkeypatch.setattr(cnnlab.evaluation, "save_evaluation", refused)
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    assert cli.main(["evaluate", str(run_dir), "--device", "cpu", "--data-dir", str(trained_runs["data"])]) == 1
    err = capsys.readouterr().err
    assert message in err and str(run_dir / "evaluation") in err and err.count("\n") == 1 and "--debug" not in err


def test_a_newline_in_a_file_name_stays_on_its_line(digit_run, tmp_path, capsys):
    Image.new("L", (28, 28)).save(tmp_path / "two\nlines.png", "PNG")
    (tmp_path / "bad\nname.png").write_text("not an image")
    code = cli.main(["predict", str(digit_run), str(tmp_path / "two\nlines.png"), str(tmp_path / "bad\nname.png"),
                     "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 1 and out.count("\n") == 1 and out.startswith(f"{tmp_path}/two\\nlines.png: ")
    assert err.count("\n") == 2 and f"{tmp_path}/bad\\nname.png: not an image" in err


def test_a_data_dir_that_is_no_folder_is_refused_before_anything_downloads(tmp_path, capsys):
    missing = tmp_path / "mnits"  # a typo: cnnlab used to pass it over and download into its cache
    assert cli.main(["train", "mnist-mlp", "--data-dir", str(missing), "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"'{missing}': no such folder" in error and "leave --data-dir out" in error
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("mnist-mlp-*"))
