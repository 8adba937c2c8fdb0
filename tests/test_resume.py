"""Checkpoints and resuming: a run killed (SIGKILL) or interrupted (Ctrl-C) mid-epoch, then resumed, ends
with exactly the history and weights of a run that was never interrupted; and a checkpoint is only ever
read back whole and checked."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from cnnlab import cli
from cnnlab.errors import CnnlabError
from helpers import KILLER, REPO, assert_same_run, history, make_idx_dataset, move_data

# fashion-cnn on the fake digits: Adam's moments, dropout's draws and the shuffle all carry across epochs.
# 96 training images in batches of 16: 6 steps an epoch.
ARGS = ["fashion-cnn", "--set", "dataset=mnist", "--epochs", "3", "--batch-size", "16", "--seed", "3",
        "--device", "cpu", "--quiet"]
STEPS_PER_EPOCH = 6


def train(*args: str) -> Path:
    """Run `cnnlab train` in this process; the run folder it printed."""
    out = _run_main(["train", *args])
    return Path(out.strip().splitlines()[-1])


def _run_main(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=120, n_test=30)


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory) -> Path:
    return train(*ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def two_epochs(digits, tmp_path_factory) -> Path:
    """A finished run of the first 2 of those 3 epochs (tests must leave it as they found it)."""
    return train(*ARGS, "--epochs", "2", "--data-dir", str(digits), "--runs-dir", str(tmp_path_factory.mktemp("runs")))


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [("SIGKILL", -signal.SIGKILL), ("SIGINT", 130)])
def test_run_stopped_in_epoch_3_resumes_to_the_same_history_and_weights(sig, code, digits, uninterrupted, tmp_path):
    argv = ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)]
    script = KILLER.format(kill_at=2 * STEPS_PER_EPOCH + 3, signal=sig, argv=argv)  # epoch 3, step 3
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == code, done.stderr
    (run_dir,) = tmp_path.iterdir()
    assert len(history(run_dir)) == 2 and not (run_dir / "weights.safetensors").exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    if sig == "SIGINT":  # Ctrl-C: one line saying what is kept and how to go on
        assert done.stderr.strip().splitlines() == [
            f"cnnlab: interrupted: {run_dir} holds epoch 2 of 3; continue with `cnnlab train --resume {run_dir}`"]

    assert train("--resume", str(run_dir)) == run_dir
    assert_same_run(run_dir, uninterrupted)
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3]


# A script for a separate process whose stdout is a pipe that nothing reads from once `close_at` steps are done
CLOSER = """
import os, sys
reader, writer = os.pipe()
os.dup2(writer, 1)
steps = 0
def hook(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == {close_at}:
        os.close(reader)
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(hook)
from cnnlab import cli
sys.exit(cli.main({argv!r}))
"""


def test_output_closed_mid_run_stops_it_resumably_and_says_so(digits, uninterrupted, tmp_path):
    argv = ["train", *[a for a in ARGS if a != "--quiet"], "--data-dir", str(digits), "--runs-dir", str(tmp_path)]
    # Closed in epoch 2: its line, the first thing written after, meets the closed pipe once epoch 2 is saved
    script = CLOSER.format(close_at=STEPS_PER_EPOCH + 3, argv=argv)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    (run_dir,) = tmp_path.iterdir()
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"cnnlab: error: the program reading the output went away, so training stopped; {run_dir} holds epoch 2 "
        f"of 3; continue with `cnnlab train --resume {run_dir}`"]
    assert [row["epoch"] for row in history(run_dir)] == [1, 2]  # the epoch whose line was never shown is kept
    assert train("--resume", str(run_dir)) == run_dir
    assert_same_run(run_dir, uninterrupted)


def test_a_finished_run_trains_further_with_epochs(digits, uninterrupted, tmp_path, capsys):
    run_dir = train(*ARGS, "--epochs", "2", "--data-dir", str(digits), "--runs-dir", str(tmp_path))
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    assert "pass --epochs N, more than 2" in capsys.readouterr().err
    assert train("--resume", str(run_dir), "--epochs", "3") == run_dir
    assert_same_run(run_dir, uninterrupted)  # 2 epochs, then 1 more = 3 at once
    assert json.loads((run_dir / "recipe.json").read_text())["epochs"] == 3


def test_a_run_from_the_other_kind_of_device_resumes_with_its_augmentation_reseeded(two_epochs, tmp_path):
    """A checkpoint written on CUDA holds a 16-byte Philox state for the augmentation generator and a CUDA
    generator; resumed on the CPU, both are dropped and the run carries on, saying so, instead of calling the
    file damaged."""
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs, run_dir)
    checkpoint = run_dir / "checkpoint.safetensors"
    with safe_open(str(checkpoint), "pt") as file:
        metadata = file.metadata()
    state = json.loads(metadata["state"])
    assert state["device"] == "cpu"
    tensors = load_file(checkpoint)
    assert tensors["rng.augment"].numel() == 5056  # the CPU generator's state
    tensors["rng.augment"] = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's: seed and offset
    tensors["rng.cuda"] = torch.arange(16, dtype=torch.uint8)
    save_file(tensors, checkpoint, metadata={**metadata, "state": json.dumps({**state, "device": "cuda"})})

    out = _run_main(["train", "--resume", str(run_dir), "--epochs", "3"])
    assert "note: it was trained on cuda: its random draws on the device (augmentation) start afresh" in out
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3]
    assert history(run_dir)[:2] == history(two_epochs)


def test_fp16_loss_scale_is_carried_by_the_checkpoint(tmp_path, monkeypatch):
    """fp16's loss scale moves as training goes (halved at an overflow, doubled after 2,000 clean steps); a run
    resumed at 65,536 again would skip steps an uninterrupted one takes. (The CPU's scaler stands in for CUDA's.)"""
    from dataclasses import replace

    from safetensors.torch import save_file

    from cnnlab import engines
    from cnnlab.checkpoint import load_checkpoint, save_checkpoint
    from cnnlab.data import ImageSet
    from cnnlab.loop import start_state
    from cnnlab.models import create_model
    from cnnlab.recipes import get_recipe

    monkeypatch.setattr(engines, "pick_autocast", lambda device, precision: precision)  # fp16 let through
    recipe = replace(get_recipe("fashion-cnn"), autocast="fp16").resolved()
    images = ImageSet(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4), tuple("0123456789"))
    fresh = lambda: start_state(create_model("mlp", (1, 28, 28), 10), recipe, images)  # noqa: E731
    state = fresh()
    assert state.scaler.is_enabled()
    state.scaler.load_state_dict({**state.scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 7})
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, state, torch.device("cpu"), "data")
    resumed = fresh()
    load_checkpoint(path, resumed, torch.device("cpu"), "data")
    assert resumed.scaler.state_dict() == {**state.scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 7}

    with safe_open(str(path), "pt") as file:
        metadata, tensors = file.metadata(), {key: file.get_tensor(key) for key in file.keys()}
    meta = json.loads(metadata["state"])
    save_file(tensors, path, metadata={**metadata, "state": json.dumps({**meta, "scaler": {
        **meta["scaler"], "scale": "1024"}})})
    with pytest.raises(CnnlabError, match="malformed loss scale; the checkpoint is damaged"):
        load_checkpoint(path, fresh(), torch.device("cpu"), "data")


@pytest.mark.parametrize("args, message", [
    (["--resume", "RUN", "mnist-cnn"], "give no recipe name"),
    (["--resume", "RUN", "--lr", "0.1"], "only --epochs"),
    (["--resume", "RUN", "--set", "seed=4"], "only --epochs"),
    (["--resume", "RUN", "--epochs", "1"], "has trained 2 epochs already"),
    ([], "name a recipe"),
])
def test_resume_refuses_changes(args, message, two_epochs, capsys):
    assert cli.main(["train", *[str(two_epochs) if a == "RUN" else a for a in args]]) == 2
    assert message in capsys.readouterr().err
    assert json.loads((two_epochs / "recipe.json").read_text())["epochs"] == 2


def test_resume_refuses_other_data(two_epochs, tmp_path, capsys):
    other = make_idx_dataset(tmp_path / "other", seed=1)
    assert cli.main(["train", "--resume", str(two_epochs), "--epochs", "3", "--data-dir", str(other)]) == 1
    assert "trained on other data" in capsys.readouterr().err


def test_the_data_fingerprint_changes_with_the_labels_alone():
    """A run resumes only on its own data: the same images relabelled are other data."""
    from cnnlab.data import ImageSet, data_fingerprint

    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    train = ImageSet(images, torch.tensor([0, 1, 2, 3]), tuple("0123"))
    relabelled = ImageSet(images, torch.tensor([3, 2, 1, 0]), tuple("0123"))
    assert data_fingerprint(train, train) == data_fingerprint(ImageSet(images.clone(), train.labels.clone(),
                                                                       tuple("0123")), train)
    assert data_fingerprint(relabelled, train) != data_fingerprint(train, train)


def test_resume_names_recorded_data_that_is_gone_before_any_download(two_epochs, tmp_path, capsys, monkeypatch):
    from cnnlab import data

    run_dir = shutil.copytree(two_epochs, tmp_path / "run")
    move_data(run_dir, tmp_path / "gone")
    monkeypatch.setattr(data, "fetch", lambda *args: pytest.fail("resume looked for the data set elsewhere"))
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 1
    assert capsys.readouterr().err == (f"cnnlab: error: {run_dir} was trained on data in {tmp_path / 'gone'}, which "
                                       "is gone; pass --data-dir FOLDER where the data set is now\n")


def test_environment_records_what_reproduces_the_run(uninterrupted):
    environment = json.loads((uninterrupted / "environment.json").read_text())
    assert environment["seed"] == 3 and environment["deterministic"] is False
    assert environment["device"] == "cpu" and environment["torch"] == torch.__version__
    assert {"python", "numpy", "safetensors", "cnnlab", "cpu_threads"} <= set(environment)
    assert Path(environment["data_dir"]).is_absolute()
    cpuinfo = Path("/proc/cpuinfo")  # which CPU: its seconds, and whether bf16 was native, depend on it
    models = {line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")} if cpuinfo.exists() else set()
    assert environment["device_name"] in models if models else environment["device_name"]


@pytest.fixture
def restore_determinism():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def test_deterministic_flag_is_recorded_and_switched_on(digits, tmp_path, restore_determinism):
    run_dir = train(*ARGS, "--epochs", "1", "--deterministic", "--data-dir", str(digits), "--runs-dir", str(tmp_path))
    assert json.loads((run_dir / "recipe.json").read_text())["deterministic"] is True
    assert json.loads((run_dir / "environment.json").read_text())["deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("flag", [["--deterministic"], ["--set", "deterministic=true"]])
def test_deterministic_cli_sets_cublas_workspace_before_any_work(flag, monkeypatch, restore_determinism):
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG at the process's first product; airbench's whitening computes one
    before training starts, so the CLI sets it before anything else runs."""
    import cnnlab.train

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    monkeypatch.setattr(cnnlab.train, "train_recipe", lambda recipe, **kwargs: seen.append(
        (os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.are_deterministic_algorithms_enabled())) or Path("run"))
    assert cli.main(["train", "mnist-mlp", *flag, "--quiet"]) == 0
    assert seen == [(":4096:8", True)]


def test_deterministic_run_switches_on_before_the_model_sets_itself_up(monkeypatch, restore_determinism):
    """A library caller (no CLI) gets the same order: start_state switches determinism on before airbench's
    init_from_data runs its first matrix product."""
    from dataclasses import replace

    from cnnlab.data import ImageSet
    from cnnlab.loop import start_state
    from cnnlab.models import AirbenchNet, create_model
    from cnnlab.recipes import get_recipe

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    monkeypatch.setattr(AirbenchNet, "init_from_data", lambda self, inputs: seen.append(
        (os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.are_deterministic_algorithms_enabled())))
    recipe = replace(get_recipe("cifar10-fast"), deterministic=True)
    train_set = ImageSet(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.arange(8) % 10, tuple("0123456789"))
    start_state(create_model("airbench", (3, 32, 32), 10), recipe, train_set)
    assert seen == [(":4096:8", True)]


def test_fast_engine_leaves_cudnn_autotuning_off_when_deterministic(restore_determinism):
    """The fast engine turns cuDNN's autotuner on for CUDA, but not over --deterministic's choice."""
    from cnnlab import engines
    from cnnlab.loop import use_deterministic_algorithms

    cuda = torch.device("cuda")  # the flags are plain switches: setting them needs no GPU
    with engines.settings(cuda, "fast"):
        assert torch.backends.cudnn.benchmark is True
    use_deterministic_algorithms()
    with engines.settings(cuda, "fast"):
        assert torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("loss_clip", ["1e-7", "0"])  # Keras's clipped loss, and cross_entropy
def test_deterministic_cuda_runs_repeat_exactly(loss_clip, digits, tmp_path, restore_determinism):
    args = [*ARGS[:-3], "--device", "cuda", "--deterministic", "--set", f"loss_clip={loss_clip}", "--quiet",
            "--data-dir", str(digits), "--runs-dir", str(tmp_path)]
    first, second = train(*args), train(*args)
    assert history(first) == history(second)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_airbench_repeats_exactly_on_cuda(digits, tmp_path, restore_determinism):
    """airbench's whitening (a cuBLAS product before training), its global max pool's backward and the fast
    engine's cuDNN settings, all under --deterministic."""
    args = ["fashion-fast", "--set", "dataset=mnist", "--epochs", "2", "--batch-size", "32", "--device", "cuda",
            "--deterministic", "--quiet", "--data-dir", str(digits), "--runs-dir", str(tmp_path)]
    first, second = train(*args), train(*args)
    assert history(first) == history(second)


# Beyond the tutorial: flips, shifts, a per-step schedule, weight averaging and normalisation all carry state
# across epochs (the augmentation generator, the schedule's position, the average): killed in epoch 3 and
# resumed, the run still ends bit for bit where an uninterrupted one does.
AUGMENTED = ["mnist-cnn", "--set", "optimizer=adam", "--set", "flip=true", "--set", "translate=2",
             "--set", "schedule=cosine", "--set", "warmup=0.2", "--set", "ema=0.9", "--set", "normalize=true",
             "--epochs", "3", "--batch-size", "16", "--seed", "4", "--device", "cpu", "--quiet"]


def test_augmented_scheduled_averaged_run_resumes_exactly(digits, tmp_path):
    reference = train(*AUGMENTED, "--data-dir", str(digits), "--runs-dir", str(tmp_path / "reference"))
    argv = ["train", *AUGMENTED, "--data-dir", str(digits), "--runs-dir", str(tmp_path / "killed")]
    script = KILLER.format(kill_at=2 * STEPS_PER_EPOCH + 3, signal="SIGKILL", argv=argv)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    (run_dir,) = (tmp_path / "killed").iterdir()
    assert len(history(run_dir)) == 2
    assert train("--resume", str(run_dir)) == run_dir
    assert_same_run(run_dir, reference)


def test_a_run_is_trained_by_one_process_at_a_time(digits, tmp_path, capsys):
    """A second `--resume` of a run in use stops in one line naming the process, before touching anything;
    once that process is killed, its lock blocks nothing."""
    run_dir = train(*ARGS, "--epochs", "2", "--data-dir", str(digits), "--runs-dir", str(tmp_path / "runs"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cnnlab.files import locked\n"
                               f"with locked(__import__('pathlib').Path({str(run_dir)!r})):\n"
                               "    print('held', flush=True)\n    time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
        capsys.readouterr()
        assert cli.main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"in use by process {holder.pid}" in err, err
        assert {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    _run_main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet"])
    assert len(history(run_dir)) == 3


# A kill at a chosen moment of the end of an epoch: once the checkpoint of epoch `epoch` is written, before
# history.csv is (#22.6: a kill there lost that epoch's history row for good).
KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
import cnnlab.train as session
original = session.save_checkpoint
def save_then_die(path, state, device, data):
    size = original(path, state, device, data)
    if len(state.history) == {epoch}:
        os.kill(os.getpid(), signal.SIGKILL)
    return size
session.save_checkpoint = save_then_die
from cnnlab import cli
sys.exit(cli.main({argv!r}))
"""


def test_ctrl_c_between_the_checkpoint_and_its_history_row_names_the_epoch_on_disk(digits, tmp_path, monkeypatch,
                                                                                   capsys):
    """Ctrl-C just after epoch 1's checkpoint was written, while history.csv was: the line said 'holds epoch 0' of
    a folder whose checkpoint held epoch 1 (seen by hand, 2026-12-04), and --resume then went on after epoch 1."""
    from cnnlab.runs import Run

    write_history = Run.write_history

    def interrupted(self, rows):
        if len(rows) == 1:
            raise KeyboardInterrupt
        write_history(self, rows)

    monkeypatch.setattr(Run, "write_history", interrupted)
    assert cli.main(["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)]) == 130
    (run_dir,) = tmp_path.iterdir()
    assert capsys.readouterr().err.strip() == (
        f"cnnlab: interrupted: {run_dir} holds epoch 1 of 3; continue with `cnnlab train --resume {run_dir}`")
    monkeypatch.undo()
    assert f"resuming {run_dir} after epoch 1 of 3" in _run_main(["train", "--resume", str(run_dir)])


@pytest.mark.slow
def test_a_kill_just_after_the_last_checkpoint_loses_no_history_row(digits, uninterrupted, tmp_path):
    argv = ["train", *ARGS, "--data-dir", str(digits), "--runs-dir", str(tmp_path)]
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT.format(epoch=3, argv=argv)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    (run_dir,) = tmp_path.iterdir()
    assert len(history(run_dir)) == 3 and len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert train("--resume", str(run_dir)) == run_dir  # nothing left to train: it finishes, the files agree
    assert_same_run(run_dir, uninterrupted)
    assert _rows_but_time(run_dir) == _rows_but_time(uninterrupted)  # all three rows, as the checkpoint holds them
    metrics, expected = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, uninterrupted))
    assert (metrics["epochs"], metrics["best_val_accuracy"]) == (3, expected["best_val_accuracy"])


def _rows_but_time(run_dir: Path) -> list[str]:
    return [line.rpartition(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]


def test_resume_mends_a_finished_run_whose_history_lost_its_last_row(uninterrupted, tmp_path, capsys):
    """A run an older cnnlab resumed after such a kill: metrics.json written, history.csv a row short."""
    run_dir = Path(shutil.copytree(uninterrupted, tmp_path / "run"))
    whole = (run_dir / "history.csv").read_text()
    (run_dir / "history.csv").write_text("".join(whole.splitlines(keepends=True)[:-1]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "epochs": 2, "best_val_accuracy": 0.5}))
    out = _run_main(["train", "--resume", str(run_dir)])
    assert "history.csv and metrics.json rewritten from its checkpoint (3 epochs)" in out
    assert (run_dir / "history.csv").read_text() == whole
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert cli.main(["train", "--resume", str(run_dir)]) == 2  # whole again: nothing to mend, nothing to train
    assert "has trained 3 epochs already" in capsys.readouterr().err


def test_resume_removes_what_killed_writes_left_and_nothing_else(two_epochs, tmp_path):
    run_dir = Path(shutil.copytree(two_epochs, tmp_path / "run"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has ended
    stale = [run_dir / f".checkpoint.safetensors.{dead}.ab_cd123.tmp", run_dir / f".history.csv.{dead}.x1y2z3w4.tmp",
             run_dir / "evaluation" / f".metrics.json.{dead}.q1w2e3r4.tmp"]
    live = run_dir / f".report.html.{os.getpid()}.abcdefgh.tmp"  # a write going on in a process that is running
    (run_dir / "evaluation").mkdir()
    for path in stale + [live]:
        path.write_bytes(b"\0" * 1000)
    _run_main(["train", "--resume", str(run_dir), "--epochs", "3"])
    assert [path.exists() for path in stale] == [False] * 3 and live.exists()
