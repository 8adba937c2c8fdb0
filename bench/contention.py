"""The Fashion-MNIST lab beside busy neighbours: cnnlab and Keras, quiet and with K CPU-bound processes.

    python bench/contention.py                                  # K = 0, 1, 2, 4; 3 rounds; 12,000 training images
    python bench/contention.py --neighbours 0,2 --repeat 5 --train-images 48000

Each round runs every runner once for each K, interleaved, each in a fresh process; the neighbours are plain
Python loops (`while True: pass`) that this script starts before the run and kills after it. The time is the
second epoch's (the first holds Keras's tracing), validation included, on the first ``--train-images`` images of
the lab's own 80/20 split (the whole 48,000 take 6–10× longer under load; the ratios are what matters).
The goal (issue #17): with K neighbours on C cores cnnlab's epoch is at most 1.3 × (C + K) / C times its quiet
epoch, and never slower than Keras's beside the same neighbours.

Runners: ``cnnlab`` as it chooses by itself (cnnlab.threads); ``cnnlab-passive`` and ``cnnlab-spin`` with idle
OpenMP threads that sleep at once or spin first (libgomp's default, GOMP_SPINCOUNT=300000), both giving way to
neighbours; ``cnnlab-before`` as before issue #17 (all cores, spinning, never giving way); ``cnnlab-1`` on one
thread; ``keras`` (Keras 3 on TensorFlow as installed, in bench/.venv-keras as compare.py makes it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import BENCH, keras_python, load_average, machine, run_json, write_split  # noqa: E402

RUNNERS = {  # name → (label, environment added to the user's)
    "cnnlab": ("cnnlab (its own choice)", {}),
    "cnnlab-passive": ("cnnlab, idle threads sleep", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "cnnlab-spin": ("cnnlab, idle threads spin", {"GOMP_SPINCOUNT": "300000"}),
    "cnnlab-before": ("cnnlab before #17 (2 threads, spinning)", {"OMP_NUM_THREADS": str(len(os.sched_getaffinity(0))),
                                                                 "GOMP_SPINCOUNT": "300000"}),
    "cnnlab-1": ("cnnlab, 1 thread", {"OMP_NUM_THREADS": "1"}),
    "keras": ("Keras 3, TF as installed", {"TF_CPP_MIN_LOG_LEVEL": "2"}),
}


def subset(data: Path, train_images: int) -> Path:
    """The split's first ``train_images`` training images, a quarter as many validation images, all the test."""
    arrays = dict(np.load(data))
    arrays["train_images"] = arrays["train_images"][:train_images]
    arrays["train_labels"] = arrays["train_labels"][:train_images]
    n_val = max(1, train_images // 4)
    arrays["val_images"], arrays["val_labels"] = arrays["val_images"][:n_val], arrays["val_labels"][:n_val]
    path = data.with_name(f"{data.stem}-{train_images}.npz")
    np.savez(path, **arrays)
    return path


def run(runner: str, data: Path, keras: str) -> float:
    """The second epoch's seconds for one runner, in a fresh process with the user's own environment."""
    env = RUNNERS[runner][1]
    if runner == "keras":
        command = [keras, str(BENCH / "keras_lab.py"), "--data", str(data), "--model", "cnn-dropout",
                   "--optimizer", "adam", "--epochs", "2"]
    else:
        command = [sys.executable, str(BENCH / "cnnlab_lab.py"), "--data", str(data), "--recipe", "fashion-cnn",
                   "--epochs", "2"]
    return run_json(command, env)["epoch_seconds"][-1]  # on the user's environment, as compare.py runs all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neighbours", default="0,1,2,4", help="how many busy processes, comma-separated")
    parser.add_argument("--runners", default="cnnlab,cnnlab-before,keras", help="of: " + ", ".join(RUNNERS))
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each running everything once")
    parser.add_argument("--train-images", type=int, default=12_000, help="training images per epoch (≤ 48,000)")
    parser.add_argument("--keras-python", help="a Python with Keras (default: bench/.venv-keras)")
    args = parser.parse_args()
    counts = [int(k) for k in args.neighbours.split(",")]
    runners = args.runners.split(",")
    keras = keras_python(args.keras_python) if "keras" in runners else ""
    cores = len(os.sched_getaffinity(0))
    seconds: dict[tuple[str, int], list[float]] = {}
    started, load_at_start = time.strftime("%Y-%m-%d %H:%M"), load_average()
    with tempfile.TemporaryDirectory() as folder:
        full, _ = write_split("fashion-cnn", Path(folder), BENCH, None)
        data = subset(full, args.train_images)
        for round_ in range(args.repeat):
            for k in counts:
                for runner in runners:
                    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
                    try:
                        value = run(runner, data, keras)
                    finally:
                        for neighbour in neighbours:
                            neighbour.kill()
                            neighbour.wait()
                    seconds.setdefault((runner, k), []).append(value)
                    print(f"round {round_ + 1}, K={k}, {runner}: {value:.2f} s, load average {load_average()}",
                          file=sys.stderr, flush=True)

    print(f"{machine('cpu')}; {started} to {time.strftime('%Y-%m-%d %H:%M')}; {args.train_images:,} training "
          f"images an epoch, {args.repeat} rounds; load average at the start {load_at_start}, at the end "
          f"{load_average()}\n")
    print("| runner | neighbours K | s/epoch, median (min–max) | every run | × its quiet median | goal ≤ "
          "1.3 (C+K)/C | × Keras's median |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    def ratio(value: float, to: list[float] | None) -> str:
        return f"{value / statistics.median(to):.2f}" if to else "–"  # – : that run was not asked for

    for runner in runners:
        for k in counts:
            values = seconds[(runner, k)]
            median = statistics.median(values)
            print(f"| {RUNNERS[runner][0]} | {k} | {median:.2f} ({min(values):.2f}–{max(values):.2f}) | "
                  f"{', '.join(f'{v:.2f}' for v in values)} | {ratio(median, seconds.get((runner, 0)))} | "
                  f"{1.3 * (cores + k) / cores:.2f} | {ratio(median, seconds.get(('keras', k)))} |")

if __name__ == "__main__":
    main()
