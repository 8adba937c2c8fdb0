"""`cnnlab runs`: the table of runs, comparing runs, and TensorBoard logging."""
from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest
from PIL import Image

from cnnlab import cli
from cnnlab.compare import recipe_differences
from cnnlab.errors import CnnlabError
from cnnlab.runs import Run, list_runs
from cnnlab.train import tensorboard_writer


def test_runs_lists_every_run_with_its_numbers(trained_runs, tmp_path, capsys):
    folder = tmp_path / "runs"
    for name in ("cnn", "mlp"):
        shutil.copytree(trained_runs[name], folder / trained_runs[name].name)
    unfinished = shutil.copytree(trained_runs["cnn"], folder / "mnist-cnn-unfinished")
    (unfinished / "metrics.json").unlink()
    (folder / "notes").mkdir()  # not a run: left out
    damaged = shutil.copytree(trained_runs["mlp"], folder / "mnist-mlp-damaged")
    (damaged / "recipe.json").write_text("{not json")  # named in a warning, and the others still listed

    records = list_runs(folder)  # by date, then name
    assert "mnist-mlp-damaged/recipe.json" in capsys.readouterr().err
    assert [r.run_dir.name for r in records] == [trained_runs["cnn"].name, unfinished.name, trained_runs["mlp"].name]
    assert records[1].test_accuracy is None and records[1].best_val_accuracy == records[0].best_val_accuracy

    assert cli.main(["runs", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    cnn_line = next(line for line in lines if trained_runs["cnn"].name in line)
    metrics = json.loads((trained_runs["cnn"] / "metrics.json").read_text())
    assert cnn_line.split()[1:5] == ["mnist-cnn", "mnist", "2/2", f"{metrics['best_val_accuracy']:.4f}"]
    assert f"{metrics['test_accuracy']:.4f}" in cnn_line and "cpu" in cnn_line
    unfinished_line = next(line for line in lines if "unfinished" in line)
    assert "—" in unfinished_line


def test_runs_compare_overlays_curves_and_prints_what_differs(trained_runs, tmp_path, capsys):
    figure = tmp_path / "both.png"
    assert cli.main(["runs", "compare", str(trained_runs["cnn"]), str(trained_runs["mlp"]),
                     "--out", str(figure)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == str(figure)
    with Image.open(figure) as image:
        assert image.width > 600 and image.height > 300
    rows = {line.strip("│ ").split()[0]: line for line in out.splitlines() if line.startswith("│")}
    assert {"name", "model", "description", "epochs"} <= set(rows) and "dataset" not in rows  # only what differs
    assert [cell.strip() for cell in rows["model"].split("│")[1:-1]] == ["model", "cnn", "mlp"]


def test_recipe_differences_lists_only_fields_that_differ(trained_runs):
    differences = recipe_differences([Run(trained_runs["cnn"]), Run(trained_runs["mlp"])])
    assert set(differences) == {"name", "model", "description", "epochs"}
    assert differences["epochs"] == [2, 3]


@pytest.mark.parametrize("args, code, message", [
    (["runs", "compare", "/no/run"], 2, "two or more run folders"),
    (["runs", "compare", "/no/run", "/no/run2"], 1, "not a cnnlab run folder"),
    (["runs", "/no/such/folder"], 1, "no such folder"),
    (["runs", "a", "b"], 2, "give one folder to list"),
])
def test_runs_errors(args, code, message, capsys):
    assert cli.main(args) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_tensorboard_logs_what_history_csv_holds(fake_mnist, runs_dir, capsys):
    # The test extra has it; a machine without the extra (the lent GPU machine installs nothing) skips, saying why
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="the TensorBoard test needs cnnlab[test]'s tensorboard")
    EventAccumulator = accumulator.EventAccumulator

    assert cli.main(["train", "mnist-mlp", "--data-dir", str(fake_mnist), "--runs-dir", str(runs_dir),
                     "--epochs", "2", "--quiet", "--tensorboard"]) == 0
    run_dir = runs_dir / capsys.readouterr().out.strip().split("/")[-1]
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    for tag, column in (("loss/train", "loss"), ("accuracy/validation", "val_accuracy")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([float(row[column]) for row in history], rel=1e-5)


def test_tensorboard_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[tensorboard\]'"):
        tensorboard_writer(tmp_path)


def test_compare_runs_of_one_path_says_to_give_two_not_reads_its_characters(trained_runs):
    """compare_runs('runs/cnn') compared '/', 't', 'm', … and failed on '/': not a cnnlab run folder."""
    from cnnlab import compare_runs

    with pytest.raises(CnnlabError, match="^runs compare: give two or more run folders to compare$"):
        compare_runs(str(trained_runs["cnn"]))  # type: ignore[arg-type]
