"""How long each command takes to start and how much memory it holds: wall time and peak RSS of whole
`cnnlab` processes, each run REPEAT times, interleaved, median and range. Goals (issue #11): `--help`,
`recipes` and `runs` ≤ 0.3 s and ≤ 100 MB; `predict` of one image on a lab-3 run ≤ 2.0 s.

    PYTHONPATH=. python bench/startup.py [--repeat 5]

It trains a one-epoch lab-3 run (mnist-cnn) on small digits it writes itself, for `runs` and `predict`.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_idx_dataset  # noqa: E402  (the tests' writer of small MNIST files)


def wall(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `python ARGV` process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"python {' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return seconds


def peak_rss(argv: list[str], env: dict[str, str]) -> float:
    """Peak RSS (MB) of one `python ARGV` process, from a fresh parent so earlier children's peaks do not count."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True, check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, *argv], env=env,
                         capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_idx_dataset(tmp / "digits", n_train=240, n_test=60)
        runs = tmp / "runs"
        subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", "mnist-cnn", "--epochs", "1", "--data-dir",
                        str(data), "--runs-dir", str(runs), "--quiet"], env=env, check=True, capture_output=True)
        (run_dir,) = runs.iterdir()
        from PIL import Image

        Image.new("L", (28, 28), 0).save(tmp / "one.png")
        cli = ["-m", "cnnlab.cli"]
        commands = {"--help": [*cli, "--help"], "recipes": [*cli, "recipes"], "runs": [*cli, "runs", str(runs)],
                    "predict one image": [*cli, "predict", str(run_dir), str(tmp / "one.png")],
                    "import torch (floor)": ["-c", "import torch"]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # interleaved, so a slow spell of the machine touches every command
            for name, argv in commands.items():
                times[name].append(wall(argv, env))
        print(f"{'command':<20} {'wall s (median, min–max)':>26} {'peak RSS MB':>12}")
        for name, argv in commands.items():
            values = times[name]
            print(f"{name:<20} {statistics.median(values):>12.2f} ({min(values):.2f}–{max(values):.2f})"
                  f"{peak_rss(argv, env):>16.0f}")
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.repeat} runs each; Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
