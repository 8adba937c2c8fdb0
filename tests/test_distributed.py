"""torchrun + DistributedDataParallel: real processes on the CPU (gloo), launched as a user launches them.

Two processes train one run: rank 0 alone prints and writes it; their steps are the steps one process takes
on the whole global batch; a run killed mid-epoch resumes under torchrun to the very same weights; and what
several processes cannot train is refused in one line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cnnlab import cli, distributed
from helpers import KILLER, REPO, RUN_FILES, assert_same_run, history, make_idx_dataset

pytestmark = pytest.mark.slow  # torchrun starts processes: `make quick` leaves them out

# 124 fake images: 99 train in batches of 20, so each epoch ends with a batch of 19 that the two processes
# split 10 + 9 (the uneven case of the loss's weighting).
STEPS_PER_EPOCH = 5
# Lab 4's network: dropout, mirrored images and Adam's moments all carry random or running state across epochs.
ARGS = ["fashion-cnn", "--epochs", "3", "--batch-size", "20", "--seed", "3", "--set", "flip=true", "--device", "cpu"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2`` on a free port; ``args`` name a module (-m …) or a script."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def clothes(tmp_path_factory) -> Path:
    """Fashion-MNIST's four files, holding fake learnable images."""
    return make_idx_dataset(tmp_path_factory.mktemp("data") / "fashion-mnist", n_train=124, n_test=30)


@pytest.fixture(scope="module")
def two_processes(clothes, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run trained by two processes, and what torchrun printed."""
    runs = tmp_path_factory.mktemp("runs")
    done = torchrun("-m", "cnnlab.cli", "train", *ARGS, "--data-dir", str(clothes), "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    (run_dir,) = runs.iterdir()
    return run_dir, done


def test_two_processes_train_one_run_that_rank_0_writes(two_processes):
    run_dir, done = two_processes
    lines = done.stdout.splitlines()
    assert [line.split(" - ")[0] for line in lines if line.startswith("Epoch ")] == ["Epoch 1/3", "Epoch 2/3",
                                                                                      "Epoch 3/3"]
    assert lines.count("Total params: 804,554") == 1 and sum(line.startswith("Test loss") for line in lines) == 1
    assert lines[-1] == str(run_dir)  # printed once, by rank 0
    assert RUN_FILES | {"checkpoint.safetensors"} <= {path.name for path in run_dir.iterdir()}
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["world_size"] == 2 and environment["backend"] == "gloo"
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3]
    with safe_open(str(run_dir / "checkpoint.safetensors"), "pt") as f:  # each process's generators
        assert {"rng.torch", "rng.augment", "rng.1.torch", "rng.1.augment"} <= set(f.keys())
        assert not torch.equal(f.get_tensor("rng.augment"), f.get_tensor("rng.1.augment"))


def test_two_processes_take_the_steps_of_one_on_the_whole_batch(clothes, tmp_path, capsys):
    """Same history and weights, to float rounding (observed: 1e-7), as one process with the same global batch.

    Lab 3's network and plain SGD: no dropout, BatchNorm or augmentation, so nothing but the sharding and
    the averaging can differ. Were the shards wrong (both processes on the same half, or the uneven last
    batch weighed as an even one), the gradients averaged unscaled or summed, or the shuffles different, the
    weights would move apart by orders of magnitude more than 1e-5; were each process to run the whole batch,
    the loss and accuracy summed over the processes would come out doubled.
    """
    args = ["mnist-cnn", "--set", "dataset=fashion-mnist", "--epochs", "3", "--batch-size", "20", "--lr", "0.05",
            "--device", "cpu", "--quiet", "--data-dir", str(clothes)]
    done = torchrun("-m", "cnnlab.cli", "train", *args, "--runs-dir", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr
    assert cli.main(["train", *args, "--runs-dir", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    ((two,), (one,)) = [list((tmp_path / name).iterdir()) for name in ("two", "one")]

    for shared, alone in zip(history(two), history(one), strict=True):
        assert shared == pytest.approx(alone, rel=1e-5)
    weights, expected = load_file(two / "weights.safetensors"), load_file(one / "weights.safetensors")
    for name, tensor in expected.items():
        assert (weights[name] - tensor).abs().max() <= 1e-5 * tensor.abs().max(), name


def test_a_run_killed_mid_epoch_resumes_under_torchrun_to_the_same_weights(two_processes, clothes, tmp_path):
    uninterrupted, _ = two_processes
    argv = ["train", *ARGS, "--quiet", "--data-dir", str(clothes), "--runs-dir", str(tmp_path)]
    script = tmp_path / "killed.py"  # rank 0 is killed in epoch 3, step 3; torchrun then stops rank 1
    script.write_text(KILLER.format(kill_at=2 * STEPS_PER_EPOCH + 3, signal="SIGKILL", argv=argv))
    assert torchrun(str(script)).returncode != 0
    (run_dir,) = (path for path in tmp_path.iterdir() if path.is_dir())
    assert len(history(run_dir)) == 2 and not (run_dir / "weights.safetensors").exists()

    resumed = torchrun("-m", "cnnlab.cli", "train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("Epoch 3/3") == 1 and "Epoch 2/3" not in resumed.stdout
    assert_same_run(run_dir, uninterrupted)  # bit for bit: each process took back its own generators


def test_a_batch_that_does_not_split_over_the_processes_is_refused_in_one_line(clothes, tmp_path):
    done = torchrun("-m", "cnnlab.cli", "train", "mnist-mlp", "--batch-size", "15", "--device", "cpu",
                    "--data-dir", str(clothes), "--runs-dir", str(tmp_path))
    assert done.returncode != 0 and not list(tmp_path.iterdir())
    error = "cnnlab: error: --batch-size 15 does not split over 2 processes: the batch size is the global batch, " \
            "so give a multiple of 2"
    assert done.stderr.splitlines().count(error) == 1  # rank 0 says it; torchrun then adds its own report


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("args, message", [
    (["--batch-size", "15"], "--batch-size 15 does not split over 2 processes"),
    (["--set", "sync_batchnorm=true"], "sync_batchnorm needs CUDA"),
    (["--device", "cuda:1"], "each process takes cuda:LOCAL_RANK"),
    (["--set", "freeze_epochs=2"], "freeze_epochs=2 cannot run under torchrun"),
])
def test_what_several_processes_cannot_train_is_refused_before_they_meet(rank, args, message, clothes, tmp_path,
                                                                         monkeypatch, capsys):
    """As each process started by torchrun sees it: refused before any process group, by rank 0 alone."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # so that --device cuda:1 gets as far
    assert cli.main(["train", "mnist-mlp", "--device", "cpu", *args, "--data-dir", str(clothes),
                     "--runs-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and not list(tmp_path.iterdir())
    if rank == 0:
        assert len(err.splitlines()) == 1 and err.startswith("cnnlab: error: ") and message in err
    else:
        assert err == ""  # every process met the same command; rank 0 speaks for them


def test_a_run_of_two_processes_resumes_only_with_two(two_processes, capsys):
    run_dir, _ = two_processes
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    assert "was written by 2 training process(es), not 1: resume it under torchrun with 2 processes in all" in \
        capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_one_run_with_nccl_and_batchnorm_over_the_whole_batch(clothes, tmp_path):
    done = torchrun("-m", "cnnlab.cli", "train", "fashion-cpu", "--epochs", "2", "--device", "cuda", "--quiet",
                    "--set", "sync_batchnorm=true", "--data-dir", str(clothes), "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (run_dir,) = tmp_path.iterdir()
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["backend"] == "nccl" and environment["device"] == "cuda:0"
    assert (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("size", [16, 3, 7])
def test_shards_weigh_their_mean_loss_so_that_the_average_is_the_whole_batch_mean(size, monkeypatch):
    batch, losses = torch.arange(100, 100 + size), torch.rand(size, dtype=torch.float64)
    parts, averaged = [], 0.0
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        shard, share = distributed.shard(batch)
        parts.append(shard)
        averaged += losses[shard - 100].mean().item() * share / 3  # DDP's average over the processes
    assert torch.equal(torch.cat(parts), batch)
    assert averaged == pytest.approx(losses.mean().item(), rel=1e-12)
