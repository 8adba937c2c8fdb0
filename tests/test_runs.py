"""The run folder, one model of it: ``cnnlab.runs.Run`` lists, reads and writes every file; the run list shows only
what opens and never reads outside the runs folder; special, huge, linked-out or ill-typed files are refused in
one line, never waited on, never listed as a good run; files cnnlab did not write are not replaced."""
from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.errors import CnnlabError, DataMissing
from cnnlab.runs import ModelInfo, Run, list_runs, load_run, load_test_set, run_folder, scan_runs
from helpers import REPO, RUN_FILES, move_data, running_studio


@pytest.fixture
def runs(trained_runs, tmp_path) -> Path:
    """A runs folder holding copies of the trained CNN and MLP, as cnn/ and mlp/."""
    folder = tmp_path / "runs"
    for name in ("cnn", "mlp"):
        shutil.copytree(trained_runs[name], folder / name)
    return folder


def cnnlab(*argv: str, timeout: float = 60, memory: int | None = None) -> subprocess.CompletedProcess:
    """`cnnlab ARGV` in its own process, so that a hang is a timeout and a runaway read meets ``memory`` bytes."""
    limit = (lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory))) if memory else None
    return subprocess.run([sys.executable, "-m", "cnnlab.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(REPO)})


# ---------------------------------------------------------------------------------------------------------
# One Run type: every file through it, the weights when needed
# ---------------------------------------------------------------------------------------------------------
def test_run_lists_reads_and_writes_every_file_and_loads_the_weights_only_when_asked(runs, trained_runs):
    run = Run(runs / "cnn")
    assert set(run.files()) == RUN_FILES | {"checkpoint.safetensors"}
    metrics = json.loads((runs / "cnn" / "metrics.json").read_text())
    assert run.metrics == metrics and run.finished and run.test_accuracy == metrics["test_accuracy"]
    assert [row.epoch for row in run.history] == [1, 2] and run.recipe.name == "mnist-cnn"
    assert run.info.classes == tuple("0123456789") and run.environment["device"] == "cpu"
    assert run.best_val_accuracy == metrics["best_val_accuracy"] and run.data_dir == trained_runs["data"].resolve()
    assert "model" not in vars(run)  # nothing loaded the weights yet
    assert run.read_figure("predictions.png").startswith(b"\x89PNG") and run.read_figure("nope.png") is None

    (runs / "cnn" / "weights.safetensors").unlink()  # the listing never needed them
    assert [r.run_dir.name for r in list_runs(runs)] == ["cnn", "mlp"]
    with pytest.raises(CnnlabError, match="training has not finished"):  # as the checkpoint is there
        run.model  # noqa: B018

    loaded = load_run(runs / "mlp")
    assert load_run(loaded) is loaded and not loaded.model.training  # a Run is taken as it is
    loaded.write_history(loaded.history[:1])
    assert len(Run(runs / "mlp").history) == 1 and loaded.history == Run(runs / "mlp").history
    with pytest.raises(ValueError, match="not a figure"):
        loaded.figure("../../escape.png")


def test_the_run_list_checks_model_json_as_loading_does_without_pytorch():
    from cnnlab import images, runs

    assert set(runs.PREPROCESS_NAMES) == set(images.PREPROCESS)


def test_run_level_functions_take_a_run_or_a_path(runs, trained_runs):
    from cnnlab.evaluation import evaluate_run

    by_path, _ = evaluate_run(runs / "mlp", trained_runs["data"], device="cpu")
    by_run, files = evaluate_run(Run(runs / "mlp"), trained_runs["data"], device="cpu")
    assert by_run.accuracy == by_path.accuracy and files[0].parent == runs / "mlp" / "evaluation"
    assert Run(runs / "mlp").read_evaluation()["test_accuracy"] == by_run.accuracy


def test_data_gone_is_one_line_whose_advice_is_kept_apart(digit_run, tmp_path, monkeypatch):
    """The CLI and Python read one line, as ever; what is missing and the advice are parts of their own, which the
    studio reads to give its own advice (tests/test_studio.py)."""
    from cnnlab import errors

    move_data(digit_run, tmp_path / "gone")
    missing = f"{digit_run} was trained on data in {tmp_path / 'gone'}, which is gone"
    for command_line, advice in ((False, "pass data_dir=FOLDER"), (True, "pass --data-dir FOLDER")):
        monkeypatch.setattr(errors, "COMMAND_LINE", command_line)
        with pytest.raises(DataMissing) as caught:
            load_test_set(digit_run)
        assert (caught.value.missing, caught.value.advice) == (missing, f"{advice} where the data set is now")
        assert str(caught.value) == f"{missing}; {advice} where the data set is now"
    copy = pickle.loads(pickle.dumps(caught.value))  # as a child process hands it back
    assert (str(copy), copy.missing, copy.advice) == (str(caught.value), caught.value.missing, caught.value.advice)


def test_where_the_data_came_from_is_one_record_and_old_folders_still_read(digit_run, tmp_path):
    """environment.json's data_dir names a folder run's images as it names a data set's --data-dir; a run
    written before kept a folder run's in model.json, and is still read."""
    images = tmp_path / "shapes"
    for part in ("train", "test"):
        for name in ("a", "b"):
            (images / part / name).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (28, 28), 80 * i + (name == "b") * 40).save(images / part / name / f"{i}.png")
    run = Run(tmp_path / "folder-run")
    run.run_dir.mkdir()
    info = ModelInfo("mlp", (1, 28, 28), ("a", "b"), "folder", preprocess="grey-fit")
    run.begin(Run(digit_run).recipe, info, torch.device("cpu"), images)
    assert "folder" not in json.loads(run.path("model.json").read_text())
    assert json.loads(run.path("environment.json").read_text())["data_dir"] == str(images.resolve())
    assert Run(run.run_dir).data_dir == images.resolve() and len(load_test_set(Run(run.run_dir))) == 4

    model = json.loads(run.path("model.json").read_text())  # as cnnlab wrote it before
    run.path("model.json").write_text(json.dumps({**model, "folder": str(images)}))
    environment = json.loads(run.path("environment.json").read_text())
    run.path("environment.json").write_text(json.dumps({**environment, "data_dir": None}))
    assert Run(run.run_dir).data_dir == images and len(load_test_set(run.run_dir)) == 4


def test_training_on_a_folder_is_an_api_function(tmp_path):
    from cnnlab import train_folder

    images = tmp_path / "pets"
    for label, name in enumerate(("cat", "dog")):
        (images / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (12, 10), (30 + 200 * label, 10 * i, 90)).save(images / name / f"{i}.png")
    run_dir = train_folder(images, "mnist-mlp", size=8, channels=1, runs_dir=tmp_path / "runs", verbose=False)
    run = load_run(run_dir)
    assert run.recipe.dataset == "folder" and run.recipe.name == "mnist-mlp" and run.info.in_shape == (1, 8, 8)
    assert run.data_dir == images.resolve() and run.info.classes == ("cat", "dog")


# ---------------------------------------------------------------------------------------------------------
# #22.3: the run list shows only what opens, and nothing is read from outside the runs folder
# ---------------------------------------------------------------------------------------------------------
def test_the_run_list_leaves_out_links_out_and_hidden_folders_and_reads_nothing_outside(runs, tmp_path, capsys):
    outside = shutil.copytree(runs / "mlp", tmp_path / "outside")
    (runs / "escape").symlink_to(outside)
    shutil.copytree(runs / "mlp", runs / ".hidden")
    (runs / "cnn" / "metrics.json").unlink()
    (runs / "cnn" / "metrics.json").symlink_to(outside / "metrics.json")  # a file of the run leading out
    good, damaged = scan_runs(runs)
    assert [r.run_dir.name for r in good] == ["mlp"]
    assert damaged == [(runs / "cnn", f"{runs / 'cnn' / 'metrics.json'}: a link that leads out of {runs / 'cnn'}; "
                                      "the run folder is damaged")]
    assert [run_folder(runs, name) for name in ("escape", ".hidden", "", "..", "x" * 300)] == [None] * 5
    assert cli.main(["runs", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "escape" not in out + err and "hidden" not in out + err and "mlp" in out
    assert err == f"cnnlab: warning: damaged: {damaged[0][1]}\n"


def test_a_linked_evaluation_is_never_followed_out_of_the_run(runs, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"password": "hunter2"}))
    (runs / "mlp" / "evaluation").mkdir()
    (runs / "mlp" / "evaluation" / "metrics.json").symlink_to(secret)
    (runs / "mlp" / "evaluation" / "confusion_counts.csv").write_text("true,a\na,1\n")
    with pytest.raises(CnnlabError, match="a link that leads out of"):
        Run(runs / "mlp").read_evaluation()
    with running_studio(runs) as url:
        try:
            urllib.request.urlopen(f"{url}/api/runs/mlp/evaluation", timeout=30)
            raise AssertionError("the studio answered with the file")
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
    assert status == 400 and "hunter2" not in body and "leads out of" in body


# ---------------------------------------------------------------------------------------------------------
# #22.7: only regular files, of a bounded size
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["history.csv", "metrics.json"])
def test_a_fifo_in_a_run_folder_neither_hangs_predict_nor_the_listing(name, runs, tmp_path):
    (runs / "mlp" / name).unlink()
    os.mkfifo(runs / "mlp" / name)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    done = cnnlab("predict", str(runs / "mlp"), str(image), "--device", "cpu")  # needs neither file
    assert done.returncode == 0, done.stderr
    done = cnnlab("runs", str(runs))
    assert done.returncode == 0 and done.stderr == (f"cnnlab: warning: damaged: {runs / 'mlp' / name}: not a regular "
                                                    "file; the run folder is damaged\n")
    assert "cnn" in done.stdout


def test_dev_zero_or_a_huge_file_is_refused_without_reading_it(runs):
    (runs / "mlp" / "metrics.json").unlink()
    (runs / "mlp" / "metrics.json").symlink_to("/dev/zero")
    with open(runs / "cnn" / "history.csv", "r+b") as huge:  # 2 GB, sparse: nothing is written to disk
        huge.truncate(2**31)
    done = cnnlab("runs", str(runs), memory=2**30)  # a command that reads only JSON and CSV files, in 1 GB
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"cnnlab: warning: damaged: {runs / 'cnn' / 'history.csv'}: 2,147,483,648 bytes, more than the 67,108,864 "
        "such a file may hold; the run folder is damaged",
        f"cnnlab: warning: damaged: {runs / 'mlp' / 'metrics.json'}: a link that leads out of {runs / 'mlp'}; "
        "the run folder is damaged"]
    (runs / "mlp" / "metrics.json").unlink()
    try:  # /dev/zero's own device, inside the run: no link to follow out, and still not a regular file
        os.mknod(runs / "mlp" / "metrics.json", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device file needs root")
    with pytest.raises(CnnlabError, match="metrics.json: not a regular file"):
        Run(runs / "mlp").metrics  # noqa: B018


# ---------------------------------------------------------------------------------------------------------
# #22.8 and #22.10: a damaged run is listed as damaged; values that should be refused are refused
# ---------------------------------------------------------------------------------------------------------
DAMAGES = {
    "metrics a list": ("metrics.json", lambda m: [1, 2], "metrics.json: a list, where a JSON object is needed"),
    "test_accuracy text": ("metrics.json", lambda m: {**m, "test_accuracy": "0.9"},
                           "test_accuracy is '0.9', not a share"),
    "test_accuracy 3": ("metrics.json", lambda m: {**m, "test_accuracy": 3}, "test_accuracy is '3', not a share"),
    "created a number": ("environment.json", lambda e: {**e, "created": 20261204}, "created is '20261204', not a text"),
    "device a list": ("environment.json", lambda e: {**e, "device": ["cpu"]}, "device is \"['cpu']\", not a text"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_is_listed_as_damaged_and_never_breaks_the_listing(damage, runs, capsys):
    name, change, message = DAMAGES[damage]
    path = runs / "mlp" / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    good, damaged = scan_runs(runs)
    assert [r.run_dir.name for r in good] == ["cnn"] and [folder.name for folder, _ in damaged] == ["mlp"]
    assert message in damaged[0][1]
    assert cli.main(["runs", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "cnn" in out and err.startswith("cnnlab: warning: damaged:") and message in err
    with running_studio(runs) as url:
        for endpoint in ("/api/runs", "/health"):
            with urllib.request.urlopen(url + endpoint, timeout=30) as response:
                assert response.status == 200
        with urllib.request.urlopen(f"{url}/api/runs", timeout=30) as response:
            assert [entry["name"] for entry in json.load(response)["damaged"]] == ["mlp"]


@pytest.mark.parametrize("row, message", [
    ("1,0.5,0.5,0.4,1.5,1.0", "epoch 1's val_accuracy is 1.5, not a share from 0 to 1"),
    ("1,0.5,0.5,0.4,nan,1.0", "epoch 1's val_accuracy is nan"),
    ("1,-1,0.5,0.4,0.5,1.0", "epoch 1's loss is -1.0, not a finite number"),
    ("2,0.5,0.5,0.4,0.5,1.0", "row 1 is epoch 2"),
    ("1,abc,0.5,0.4,0.5,1.0", "malformed"),
])
def test_history_values_that_cannot_be_are_refused_not_shown_as_the_best(row, message, runs, capsys):
    (runs / "mlp" / "history.csv").write_text(f"epoch,loss,accuracy,val_loss,val_accuracy,seconds\n{row}\n")
    good, damaged = scan_runs(runs)
    assert [r.run_dir.name for r in good] == ["cnn"] and message in damaged[0][1]
    assert cli.main(["runs", str(runs)]) == 0
    assert "1.5000" not in capsys.readouterr().out


@pytest.mark.parametrize("std", [[0.0], [float("nan")], [float("inf")], [0.3, 0.3]])
def test_a_normalisation_std_of_zero_or_nan_is_refused_when_the_run_loads(std, runs, tmp_path, capsys):
    path = runs / "mlp" / "model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "normalization": {"mean": [0.1] * len(std),
                                                                                     "std": std}}))
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    assert cli.main(["predict", str(runs / "mlp"), str(image), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "model.json: normalization" in err and "%" not in err


# ---------------------------------------------------------------------------------------------------------
# #22.11: a file the user named is replaced only if cnnlab wrote it, or with --force
# ---------------------------------------------------------------------------------------------------------
def test_runs_compare_replaces_only_its_own_figure(runs, tmp_path, capsys):
    theirs = tmp_path / "notes.png"
    theirs.write_bytes(b"my own notes, not a figure")
    argv = ["runs", "compare", str(runs / "cnn"), str(runs / "mlp"), "--out", str(theirs)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and cnnlab did not write it" in err and "--force" in err
    assert theirs.read_bytes() == b"my own notes, not a figure"
    assert cli.main([*argv, "--force"]) == 0 and theirs.read_bytes().startswith(b"\x89PNG")
    assert cli.main(argv) == 0  # now cnnlab's own figure: replaced again without --force
    Image.new("RGB", (4, 4)).save(theirs)  # a PNG, but not cnnlab's
    assert cli.main(argv) == 1
    assert cli.main(["runs", "compare", str(runs / "cnn"), str(runs / "mlp"), "--out", str(tmp_path)]) == 1


def test_inspect_save_replaces_only_its_own_figure(tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    system_file = tmp_path / "passwd"
    system_file.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert cli.main(["inspect", str(image), "--save", str(system_file)]) == 1
    assert "exists and cnnlab did not write it" in capsys.readouterr().err
    assert system_file.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert cli.main(["inspect", str(image), "--save", str(image)]) == 1  # the image itself
    assert Image.open(image).size == (28, 28)
    figure = tmp_path / "figure.png"
    assert cli.main(["inspect", str(image), "--save", str(figure)]) == 0
    assert cli.main(["inspect", str(image), "--save", str(figure)]) == 0  # its own: replaced
    assert cli.main(["inspect", str(image), "--save", str(system_file), "--force"]) == 0
    # several images into a folder: each figure is named after its image, so the images' own folder is refused
    assert cli.main(["inspect", str(image), str(figure), "--save", str(tmp_path)]) == 1
    assert Image.open(image).size == (28, 28)


@pytest.mark.parametrize("given", [None, 3, b"runs/x"])
def test_load_run_of_what_is_not_a_path_is_one_line(given):
    """None, a number or bytes failed inside pathlib with TypeError 'expected str, bytes or os.PathLike' (from_run
    too: test_train_folder_checks_size_channels_and_from_run)."""
    from cnnlab import resume_run

    for call in (load_run, resume_run):
        with pytest.raises(CnnlabError, match=rf"^a run is its folder's path or a Run, not {type(given).__name__}"):
            call(given)


def test_load_run_of_a_run_still_training_says_to_wait_not_to_resume(digit_run):
    """A run another process is training (its lock held, no weights yet) was met with 'continue it with
    cnnlab.resume_run(...)', which would only meet the lock; when nobody holds it, resuming is still the advice."""
    from cnnlab.files import locked

    (digit_run / "weights.safetensors").rename(digit_run / "checkpoint.safetensors")  # as mid-training
    with locked(digit_run):
        with pytest.raises(CnnlabError, match=rf"training has not finished; process {os.getpid()} is training it "
                                              "now: wait for it to finish, then load it$"):
            load_run(digit_run)
    with pytest.raises(CnnlabError, match=r"training has not finished; continue it with cnnlab.resume_run"):
        load_run(digit_run)
