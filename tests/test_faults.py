"""Faults never lose work nor pass silently: tampered run folders and checkpoints, a diverging loss, a full
disk, CUDA out of memory, damaged data files; and the CLI reports each as one line with the right exit code."""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import cnnlab.checkpoint
import cnnlab.files
import cnnlab.loop
import cnnlab.runs
import cnnlab.train
from cnnlab import cli, data
from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_write
from cnnlab.loop import _stop_if_diverged, fit
from cnnlab.models import create_model
from cnnlab.recipes import get_recipe, with_overrides
from helpers import cifar_batch_bytes, make_idx_dataset

# mnist-cnn with Adam on 48 fake digits: 40 train / 8 validation, 4 steps an epoch of 10 images.
ARGS = ["mnist-cnn", "--optimizer", "adam", "--epochs", "2", "--batch-size", "10", "--seed", "1", "--device", "cpu",
        "--quiet"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=50, n_test=10)


@pytest.fixture(scope="module")
def finished(digits, tmp_path_factory) -> Path:
    """A finished 2-epoch run; tests tamper with copies of it."""
    runs = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / finished.name))


def one_line_error(capsys, code: int, argv: list[str]) -> str:
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------------------
# Tampered checkpoints are refused before anything is loaded
# ---------------------------------------------------------------------------------------------------------
def rewrite_checkpoint(run_dir: Path, change) -> None:
    """Apply ``change(tensors, meta)`` to the run's checkpoint, as someone editing the file would."""
    path = run_dir / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    meta = json.loads(header["state"])
    change(tensors, meta)
    save_file(tensors, path, metadata={**header, "state": json.dumps(meta)})


def _set(mapping, key, value):
    mapping[key] = value


TAMPERINGS = {
    "NaN weights": (lambda t, m: t["model.dense.weight"].view(-1)[7:9].fill_(float("nan")), "NaN or infinite"),
    "wrong shape": (lambda t, m: _set(t, "model.dense_1.bias", torch.zeros(11)), "(11,), where torch.float32 (10,)"),
    "missing key": (lambda t, m: t.pop("model.conv2d.bias"), "tensors missing ['conv2d.bias'];"),
    "extra key": (lambda t, m: _set(t, "model.backdoor", torch.zeros(1)), "tensors unexpected ['backdoor'];"),
    "stray tensor": (lambda t, m: _set(t, "code.run", torch.zeros(1)), "unexpected tensor 'code.run'"),
    "moment shape": (lambda t, m: _set(t, "optimizer.0.exp_avg", torch.zeros(3)), "optimiser tensor"),
    "moment missing": (lambda t, m: t.pop("optimizer.1.exp_avg_sq"), "covers only some"),
    "moment NaN": (lambda t, m: t["optimizer.2.exp_avg"].fill_(float("inf")), "optimiser tensor"),
    "settings": (lambda t, m: m["param_groups"][0].update(betas=[0.5, 0.999]), "settings differ"),
    "lr text": (lambda t, m: m["param_groups"][0].update(lr="0.001"), "settings differ"),
    "generator": (lambda t, m: t["rng.torch"].zero_(), "state is invalid"),
    "generator size": (lambda t, m: _set(t, "rng.shuffle", torch.zeros(8, dtype=torch.uint8)), "'shuffle'"),
    "history": (lambda t, m: m["history"][1].update(epoch=7), "row 2 of the history"),
    "no history": (lambda t, m: m.pop("history"), "not a cnnlab-checkpoint/1 file"),
}


@pytest.mark.parametrize("name", TAMPERINGS)
def test_tampered_checkpoint_is_refused(name, run_copy, digits, capsys):
    change, message = TAMPERINGS[name]
    rewrite_checkpoint(run_copy, change)
    err = one_line_error(capsys, 1, ["train", "--resume", str(run_copy), "--epochs", "3", "--data-dir", str(digits)])
    assert message in err and "checkpoint.safetensors" in err


class _Payload:
    """Unpickling this would create a file: proof that nothing was unpickled if the file never appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("target", ["checkpoint.safetensors", "weights.safetensors"])
def test_crafted_pickle_is_refused_and_never_run(target, run_copy, digits, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (run_copy / target).write_bytes(pickle.dumps({"state": _Payload(marker)}))
    argv = (["train", "--resume", str(run_copy), "--epochs", "3", "--data-dir", str(digits)]
            if target.startswith("checkpoint") else ["evaluate", str(run_copy), "--data-dir", str(digits)])
    assert "not a readable" in one_line_error(capsys, 1, argv)
    assert not marker.exists()


def test_truncated_checkpoint_is_refused(run_copy, digits, capsys):
    path = run_copy / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    err = one_line_error(capsys, 1, ["train", "--resume", str(run_copy), "--epochs", "3", "--data-dir", str(digits)])
    assert "not a readable checkpoint" in err


# ---------------------------------------------------------------------------------------------------------
# Tampered run folders are refused by the loader
# ---------------------------------------------------------------------------------------------------------
def _weights(run_dir: Path, change) -> None:
    tensors = load_file(run_dir / "weights.safetensors")
    change(tensors)
    save_file(tensors, run_dir / "weights.safetensors")


def _json(run_dir: Path, name: str, change) -> None:
    content = json.loads((run_dir / name).read_text())
    change(content)
    (run_dir / name).write_text(json.dumps(content))


RUN_TAMPERINGS = {
    "NaN weights": (lambda d: _weights(d, lambda t: t["dense.bias"].fill_(float("nan"))), "NaN or infinite"),
    "int weights": (lambda d: _weights(d, lambda t: _set(t, "dense.bias", t["dense.bias"].int())), "torch.int32"),
    "missing weight": (lambda d: _weights(d, lambda t: t.pop("dense.bias")), "missing ['dense.bias']"),
    "huge in_shape": (lambda d: _json(d, "model.json", lambda m: _set(m, "in_shape", [1, 60000, 60000])),
                      "dense.weight"),  # built on the meta device: refused by shape, nothing allocated
    "tiny in_shape": (lambda d: _json(d, "model.json", lambda m: _set(m, "in_shape", [1, 1, 1])),
                      "cannot take images of shape (1, 1, 1)"),
    "in_shape text": (lambda d: _json(d, "model.json", lambda m: _set(m, "in_shape", "28x28")), "malformed"),
    "unknown model": (lambda d: _json(d, "model.json", lambda m: _set(m, "model", "gpt")), "malformed"),
    "recipe type": (lambda d: _json(d, "recipe.json", lambda r: _set(r, "epochs", "ten")),
                    "recipe.json: epochs='ten': expected int"),  # the file's terms, not a flag never typed
    "recipe field": (lambda d: _json(d, "recipe.json", lambda r: _set(r, "exec", "rm -rf")), "unknown fields"),
    "recipe list": (lambda d: (d / "recipe.json").write_text("[1, 2]"), "JSON object"),
    "deep JSON": (lambda d: (d / "model.json").write_text("[" * 100_000), "not valid JSON"),
}  # a damaged history.csv or metrics.json is for what reads it: `cnnlab runs` lists the run as damaged (test_runs.py)


@pytest.mark.parametrize("name", RUN_TAMPERINGS)
def test_tampered_run_folder_is_refused(name, run_copy, digits, capsys):
    tamper, message = RUN_TAMPERINGS[name]
    tamper(run_copy)
    err = one_line_error(capsys, 1, ["evaluate", str(run_copy), "--data-dir", str(digits), "--device", "cpu"])
    assert message in err and str(run_copy) in err


def test_unfinished_run_says_how_to_finish(run_copy, capsys):
    (run_copy / "weights.safetensors").unlink()
    assert f"cnnlab train --resume {run_copy}" in one_line_error(capsys, 1, ["evaluate", str(run_copy)])
    with pytest.raises(CnnlabError) as caught:  # from Python (a notebook): the call, not the command
        cnnlab.evaluate_run(run_copy)
    assert f"continue it with cnnlab.resume_run({str(run_copy)!r})" in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Training faults
# ---------------------------------------------------------------------------------------------------------
def test_diverging_loss_stops_at_its_step(tmp_path):
    train, _ = data.load_dataset("mnist", make_idx_dataset(tmp_path / "mnist", n_train=40))
    recipe = with_overrides(get_recipe("mnist-mlp"), {"lr": 1e30, "batch_size": 10, "epochs": 1})
    torch.manual_seed(0)
    with pytest.raises(CnnlabError, match=r"the loss became (nan|inf) in epoch 1 at step [2-4]/4; .*the recipe's lr"):
        fit(create_model("mlp", (1, 28, 28), 10), train, train, recipe, "cpu", verbose=False)  # Python: the field


@pytest.mark.parametrize("lr", ["1e9", None])
def test_a_learning_rate_that_wrecks_training_is_named_once(fake_mnist, tmp_path, capsys, lr):
    """Keras's clipped loss stays finite when the weights blow up (about 14.5 at chance accuracy), so nothing
    stops the run: it must say so, once, and record it; a run at the default rate says nothing."""
    runs = tmp_path / "runs"
    argv = ["train", "mnist-mlp", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
            "--data-dir", str(fake_mnist), "--runs-dir", str(runs)] + (["--lr", lr] if lr else [])
    assert cli.main(argv) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    (run_dir,) = runs.iterdir()
    recorded = json.loads((run_dir / "metrics.json").read_text())["warnings"]
    assert printed == [f"warning: {text}" for text in recorded]
    if lr:
        assert len(recorded) == 1 and recorded[0].startswith("epoch 1 ended at chance accuracy")
        assert "--lr 1e+09" in recorded[0]
    else:
        assert recorded == []


def test_diverging_loss_keeps_the_last_good_checkpoint(digits, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    loss_fn = cnnlab.loop.loss_fn

    def nan_in_epoch_2_step_3(logits, labels, recipe):
        loss = loss_fn(logits, labels, recipe)
        calls["n"] += logits.requires_grad  # training steps only, not validation
        return loss * float("nan") if logits.requires_grad and calls["n"] == 4 + 3 else loss

    monkeypatch.setattr(cnnlab.loop, "loss_fn", nan_in_epoch_2_step_3)
    err = one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)])
    assert "the loss became nan in epoch 2 at step 3/4" in err and "holds epoch 1" in err
    (run_dir,) = tmp_path.iterdir()
    with safe_open(str(run_dir / "checkpoint.safetensors"), "pt") as f:
        assert len(json.loads(f.metadata()["state"])["history"]) == 1
    assert not (run_dir / "weights.safetensors").exists()


def test_divergence_between_checks_names_the_steps():
    with pytest.raises(CnnlabError, match="in epoch 2 between steps 51 and 100 of 123"):
        _stop_if_diverged(float("inf"), 2, 100, 123, 50)
    with pytest.raises(CnnlabError, match="in epoch 2 between steps 101 and 123 of 123"):
        _stop_if_diverged(float("nan"), 2, 123, 123, 50)
    with pytest.raises(CnnlabError, match="on the validation set after epoch 3"):
        _stop_if_diverged(float("nan"), 3)
    _stop_if_diverged(1e30, 1, 1, 1)  # large is not diverged


def test_cuda_out_of_memory_says_lower_the_batch_size(digits, tmp_path, monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cnnlab.train, "fit", out_of_memory)
    err = one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)])
    assert "ran out of memory with batches of 10 images: lower --batch-size" in err


def test_full_disk_is_caught_before_training(digits, tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cnnlab.train.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**5, 10**5))
    err = one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)])
    assert re.search(r": 0 MB free, the run needs about \d+ MB more; .*--runs-dir", err)
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "history.csv").exists()  # not one epoch was trained


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_no_space_for_the_first_checkpoint_fails_before_training(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write", _no_space)
    err = one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)])
    assert "No space left on device" in err and "--runs-dir" in err
    assert list(tmp_path.iterdir()) == []  # without a checkpoint nothing could be resumed: no folder is left


def test_a_refused_training_leaves_no_run_folder(tmp_path, capsys):
    """Damaged data refused after the run folder was made: the folder goes too (it could never be resumed)."""
    folder = make_idx_dataset(tmp_path / "mnist", n_train=50, n_test=10)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    runs = tmp_path / "runs"
    one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(folder), "--runs-dir", str(runs)])
    assert list(runs.iterdir()) == []


def test_a_shift_as_large_as_the_images_is_refused_before_the_run_folder_is_written(digits, tmp_path, capsys):
    runs = tmp_path / "runs"
    err = one_line_error(capsys, 2, ["train", *ARGS, "--set", "translate=28", "--data-dir", str(digits),
                                     "--runs-dir", str(runs)])
    assert err == "cnnlab: error: --set translate=28: the images are 28×28 pixels, so shift them by at most 27\n"
    assert list(runs.iterdir()) == []


def test_fit_refuses_a_shift_as_large_as_the_images():
    images, labels = torch.zeros(8, 1, 6, 6, dtype=torch.uint8), torch.arange(8) % 2
    recipe = with_overrides(get_recipe("mnist-mlp"), {"translate": 6})
    with pytest.raises(CnnlabError, match="^translate=6: the images are 6×6 pixels, so shift them by at most 5$"):
        fit(create_model("mlp", (1, 6, 6), 2), images, labels, recipe, "cpu", validation_data=(images, labels))


def test_a_class_without_one_readable_image_is_refused_in_one_line(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "pets"
    for name in ("cat", "dog", "owl"):
        (data / name).mkdir(parents=True)
        for i in range(4):
            path = data / name / f"{i}.png"
            Image.new("L", (8, 8), 60 * i).save(path)
            if name == "owl":
                path.write_bytes(path.read_bytes()[:30])  # truncated: skipped, with a warning each
    runs = tmp_path / "runs"
    assert cli.main(["train", "--data", str(data), "--runs-dir", str(runs), "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 + 1 and err[-1] == (f"cnnlab: error: {data}: class 'owl' has no readable training images; "
                                             "add some, or remove the class's folder")
    assert not runs.exists() or list(runs.iterdir()) == []


def test_disk_filling_up_mid_run_keeps_the_last_checkpoint(digits, tmp_path, monkeypatch, capsys):
    writes = []

    def second_write_fails(path, payload):
        writes.append(path)
        return atomic_write(path, payload) if len(writes) == 1 else _no_space()

    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write", second_write_fails)
    err = one_line_error(capsys, 1, ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)])
    (run_dir,) = tmp_path.iterdir()
    assert "No space left on device" in err and "holds epoch 0" in err and f"--resume {run_dir}" in err
    monkeypatch.undo()  # space freed: the run goes on from epoch 0's checkpoint
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_atomic_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    atomic_write(path, b"old")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError):
        atomic_write(path, b"new" * 1000)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_atomic_write_into_a_folder_it_cannot_write_names_the_file_meant(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".x.png.1.abcdefgh.tmp"))

    monkeypatch.setattr(cnnlab.files.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "per_class.csv", "class,precision\n")
    assert (caught.value.errno, caught.value.filename) == (errno.EROFS, str(tmp_path / "per_class.csv"))


@pytest.mark.parametrize("command, folder", [("evaluate", "evaluation"), ("explain", "explain"),
                                             ("report", "evaluation")])
def test_a_file_where_a_command_writes_its_folder_is_named_in_one_line(command, folder, trained_runs, tmp_path,
                                                                       capsys):
    run_dir = shutil.copytree(trained_runs["mlp"], tmp_path / "run")
    shutil.rmtree(run_dir / folder, ignore_errors=True)
    (run_dir / folder).write_text("the learner's notes")
    err = one_line_error(capsys, 1, [command, str(run_dir), "--data-dir", str(trained_runs["data"])])
    assert err == (f"cnnlab: error: {run_dir / folder}: a file, not a folder; cnnlab writes a folder of that name: "
                   "move the file away (or work on a copy) and run it again\n")
    assert (run_dir / folder).read_text() == "the learner's notes"


# ---------------------------------------------------------------------------------------------------------
# The CLI: one line, exit codes, --debug
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raised, code, message", [
    (ZeroDivisionError("boom"), 1, "cnnlab: error: ZeroDivisionError: boom (--debug shows the traceback)"),
    (CnnlabError("first\nsecond"), 1, "cnnlab: error: first second"),
    (KeyboardInterrupt(), 130, "cnnlab: interrupted"),
])
def test_every_failure_is_one_line(raised, code, message, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(cnnlab.train, "train_recipe", fail)
    assert one_line_error(capsys, code, ["train", "mnist-cnn"]).strip() == message


@pytest.mark.parametrize("argv", [["--debug", "train", "mnist-cnn"], ["train", "mnist-cnn", "--debug"]])
def test_debug_shows_the_traceback(argv, monkeypatch):
    monkeypatch.setattr(cnnlab.train, "train_recipe", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(argv)


# ---------------------------------------------------------------------------------------------------------
# Damaged data files name the file and the fix
# ---------------------------------------------------------------------------------------------------------
def test_damaged_deflate_stream_names_the_file(tmp_path):
    folder = make_idx_dataset(tmp_path / "m")
    path = folder / "train-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x55  # the first byte of the compressed stream: zlib fails, not gzip's own checks
    path.write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match="train-labels-idx1-ubyte.gz: cannot be read.*download it again"):
        data.load_dataset("mnist", folder)


@pytest.mark.parametrize("labels, message", [
    (np.array(3), "not a list of class numbers"),  # a 0-d array has no len()
    ([2**70, 1], "not a list of class numbers"),  # would overflow int64
    ([1.0, 2.0], "not a list of class numbers"),
])
def test_cifar_batch_with_bad_labels(labels, message):
    raw = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": labels}, protocol=2)
    with pytest.raises(CnnlabError, match=message):
        data.parse_cifar_batch(raw, "data_batch_1")


def test_cifar_labels_out_of_range_name_the_file(tmp_path):
    from helpers import make_cifar_dataset

    folder = make_cifar_dataset(tmp_path / "c", n_per_batch=4)
    path = folder / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(cifar_batch_bytes(np.zeros((4, 3, 32, 32), np.uint8), np.array([0, 1, 2, -1])))
    with pytest.raises(CnnlabError, match="test_batch: label -1 out of range 0–9"):
        data.load_dataset("cifar10", folder)


class _Reduced:
    """Pickles as ``function(*args)`` with ``state`` applied: how NumPy objects are written to a pickle."""

    def __init__(self, function, args, state):
        self.reduced = (function, args, state)

    def __reduce__(self):
        return self.reduced


def _array(shape, dtype_state, raw, name="u1"):
    from numpy._core.multiarray import _reconstruct

    dtype = _Reduced(np.dtype, (name, False, True), dtype_state)
    return _Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


PLAIN = (3, "|", None, None, None, -1, -1, 0)


def test_cifar_batch_as_python_2_wrote_it():
    """CIFAR-10's files come from Python 2: the raw bytes arrive as a latin-1 str."""
    raw = bytes(range(256)) * 24  # 2 × 3072
    batch = {"data": _array((2, 3072), PLAIN, raw.decode("latin1")), "labels": [1, 2]}
    images, labels = data.parse_cifar_batch(pickle.dumps(batch, protocol=2), "data_batch_1")
    assert images.tobytes() == raw and labels.tolist() == [1, 2]


@pytest.mark.parametrize("dtype_state, name", [
    ((3, "|", None, None, None, -1, -1, 63), "u8"),  # flags that claim object references: NumPy would trust them
    ((3, "|", None, None, None, 100000, -1, 0), "u1"),  # an item size that is not the type's
    (PLAIN, "O"),
])
def test_cifar_batch_with_a_crafted_dtype_state_is_refused(dtype_state, name):
    batch = {"data": _array((1,), dtype_state, b"\x41" * 8, name), "labels": [0]}
    with pytest.raises(CnnlabError, match="not allowed|not that of a plain number type"):
        data.parse_cifar_batch(pickle.dumps(batch, protocol=2), "data_batch_1")


def test_validation_accuracy_fallen_back_to_chance_is_named_even_unclipped():
    """airbench's rate on 7,196 digits (mnist-fast, issue #18) can learn, then collapse to chance accuracy with a
    modest, finite loss (label smoothing, no clipping): the clipped-ceiling rule never sees it, this one does. An
    untrained epoch at chance, or one that keeps learning, says nothing."""
    from cnnlab.history import EpochResult
    from cnnlab.loop import stall_warning
    from cnnlab.recipes import get_recipe

    recipe = get_recipe("mnist-fast")
    assert recipe.loss_clip == 0

    def rows(*val_accuracies):
        return [EpochResult(epoch, 1.5, 0.5, 2.0, accuracy, 1.0) for epoch, accuracy in enumerate(val_accuracies, 1)]

    warning = stall_warning(rows(0.12, 0.67, 0.98, 0.094, 0.1), recipe, 10)
    assert warning == ("epoch 4 fell back to chance validation accuracy (0.0940, 10 classes) after epoch 2 reached "
                       "0.6700: the learning rate --lr 1.5 is likely too large for this data")
    assert stall_warning(rows(0.1, 0.12, 0.11), recipe, 10) is None  # never learned: not this rule's to say
    assert stall_warning(rows(0.3, 0.9, 0.95, 0.99), recipe, 10) is None
