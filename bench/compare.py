"""cnnlab against Keras on the same machine, the same data split and the same recipe, side by side in one run.

    python bench/compare.py --epochs 3                      # CPU: Keras/TensorFlow (as installed, oneDNN on) vs cnnlab
    python bench/compare.py --device cuda --keras jax       # GPU: Keras/JAX vs cnnlab's fast and graph engines

Run it with cnnlab's Python. Keras runs in its own environment, bench/.venv-keras, made on first use
(``--keras-python`` names another). Each run is a fresh process; an epoch's time includes its validation
pass, and "s/epoch" is the median of epochs 2.. (epoch 1 holds Keras's tracing), or epoch 1 for one epoch.
Data: the real Fashion-MNIST and the MNIST sample; CIFAR-10 is not at hand, so random images of its shape.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER_ENV = dict(os.environ)  # each runner starts from this, not from what cnnlab's import below sets (cnnlab.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
from cnnlab import ImageSet, get_recipe, load_dataset, resolve_device, split  # noqa: E402
from cnnlab.device import device_name  # noqa: E402

KERAS_VENV = BENCH / ".venv-keras"
KERAS_PACKAGES = ("tensorflow==2.21.*", "keras==3.15.*")  # what the issue measured; pip's newest if unavailable
MNIST_SAMPLE = ROOT.parent / "shared" / "datasets" / "mnist-sample"
# Keras variants: (label, environment). oneDNN's switch is read by TensorFlow at start-up.
KERAS_VARIANTS = {
    "installed": ("TF as installed", {}),
    "onednn": ("TF, oneDNN on", {"TF_ENABLE_ONEDNN_OPTS": "1"}),
    "no-onednn": ("TF, oneDNN off", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "jax": ("JAX", {"KERAS_BACKEND": "jax"}),
}


THREADS: dict[str, str] = {}  # --threads: the same cap for PyTorch (OpenMP) and TensorFlow


@dataclass
class Result:
    recipe: str
    runner: str  # "Keras, TF as installed", "cnnlab fast", …
    epoch_seconds: list[float]
    val_accuracy: float
    test_accuracy: float
    peak_rss_mb: float
    versions: str

    @property
    def per_epoch(self) -> float:
        later = self.epoch_seconds[1:] or self.epoch_seconds
        return statistics.median(later)


# ---------------------------------------------------------------------------------------------------------
# Data: one split per recipe, written once, read by both sides
# ---------------------------------------------------------------------------------------------------------
def write_split(recipe_name: str, folder: Path, mnist_dir: Path, fashion_dir: Path | None) -> tuple[Path, str]:
    recipe = get_recipe(recipe_name)
    if recipe.dataset == "cifar10":  # not at hand: random images of its shape (timings only; accuracy is chance)
        generator = torch.Generator().manual_seed(0)
        train_all, test = (ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                                    torch.randint(0, 10, (n,), generator=generator), tuple("0123456789"))
                           for n in (50_000, 10_000))
        what = "random tensors of CIFAR-10's shape"
    else:
        data_dir = mnist_dir if recipe.dataset == "mnist" else fashion_dir
        train_all, test = load_dataset(recipe.dataset, data_dir, download=False)
        what = "MNIST sample" if recipe.dataset == "mnist" else "Fashion-MNIST"
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed)
    path = folder / f"{recipe_name}.npz"
    np.savez(path, classes=len(train.classes),
             **{f"{name}_{field}": getattr(part, field).numpy()
                for name, part in (("train", train), ("val", val), ("test", test)) for field in ("images", "labels")})
    return path, f"{what}, {len(train):,} train / {len(val):,} val"


# ---------------------------------------------------------------------------------------------------------
# Runners: each a fresh process that prints one JSON line
# ---------------------------------------------------------------------------------------------------------
def keras_python(requested: str | None) -> str:
    if requested:
        return requested
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {KERAS_VENV} with {', '.join(KERAS_PACKAGES)} (once)…", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        if subprocess.run(pip + list(KERAS_PACKAGES)).returncode != 0:
            print("pinned versions unavailable: installing pip's newest tensorflow and keras", file=sys.stderr)
            subprocess.run(pip + ["tensorflow", "keras"], check=True)
    return str(python)


def run_json(command: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(command, env={**USER_ENV, **THREADS, **env}, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_keras(python: str, variant: str, recipe_name: str, data: Path, epochs: int) -> Result:
    recipe = get_recipe(recipe_name)
    label, env = KERAS_VARIANTS[variant]
    out = run_json([python, str(BENCH / "keras_lab.py"), "--data", str(data), "--model", recipe.model,
                    "--optimizer", recipe.optimizer, "--epochs", str(epochs), "--batch-size", str(recipe.batch_size)],
                   {"TF_CPP_MIN_LOG_LEVEL": "2", **env})
    return Result(recipe_name, f"Keras, {label}", **out)


def run_cnnlab(runner: str, device: str, recipe_name: str, data: Path, epochs: int) -> Result:
    """``runner`` is an engine, or an engine and a mixed precision: ``fast+bf16``."""
    engine, _, precision = runner.partition("+")
    out = run_json([sys.executable, str(BENCH / "cnnlab_lab.py"), "--data", str(data), "--recipe", recipe_name,
                    "--epochs", str(epochs), "--engine", engine, "--autocast", precision or "off",
                    "--device", device], {})
    return Result(recipe_name, runner_label(runner), **out)


def runner_label(runner: str) -> str:
    """How the table names a cnnlab runner: 'fast+bf16' → 'cnnlab fast, bf16 autocast'."""
    engine, _, precision = runner.partition("+")
    return f"cnnlab {engine}" + (f", {precision} autocast" if precision else "")


def time_cli(recipe_name: str, device: str, runner: str, fashion_dir: Path | None) -> float:
    """The whole `cnnlab train` command, start to exit: imports, data, training, test, plots, run folder."""
    engine, _, precision = runner.partition("+")
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "cnnlab.cli", "train", recipe_name, "--device", device, "--quiet",
                   "--runs-dir", runs, "--set", f"engine={engine}", "--set", f"autocast={precision or 'off'}"]
        command += ["--data-dir", str(fashion_dir)] if fashion_dir else []
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, env={**USER_ENV, "PYTHONPATH": str(ROOT)}, capture_output=True)
        return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------
def table(results: list[Result], device: str, reference: str) -> str:
    """One row per recipe and runner; "×" is how many times faster than the recipe's ``reference`` runner."""
    rows = ["| recipe | device | runner | s/epoch | total s | × vs " + reference
            + " | val acc | test acc | peak RSS MB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        base = [r for r in results if r.recipe == result.recipe and r.runner == reference]
        ratio = f"{statistics.median(r.per_epoch for r in base) / result.per_epoch:.2f}" if base else "–"
        rows.append(f"| {result.recipe} | {device} | {result.runner} | {result.per_epoch:.2f} | "
                    f"{sum(result.epoch_seconds):.1f} | {ratio} | {result.val_accuracy:.4f} | "
                    f"{result.test_accuracy:.4f} | {result.peak_rss_mb:.0f} |")
    return "\n".join(rows)


def spread(results: list[Result], device: str, reference: str) -> str:
    """With --repeat: one row per recipe and runner, s/epoch as the median and range over the repeats, and
    "×" as the ratio of the medians, so a claim can quote the spread rather than the best run."""
    rows = ["| recipe | device | runner | runs | s/epoch, median (min–max) | × vs " + reference + ", of medians | "
            "peak RSS MB, max |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for recipe, runner in dict.fromkeys((r.recipe, r.runner) for r in results):
        runs = [r for r in results if r.recipe == recipe and r.runner == runner]
        seconds = [r.per_epoch for r in runs]
        base = [r.per_epoch for r in results if r.recipe == recipe and r.runner == reference]
        ratio = f"{statistics.median(base) / statistics.median(seconds):.2f}" if base else "–"
        rows.append(f"| {recipe} | {device} | {runner} | {len(runs)} | {statistics.median(seconds):.2f} "
                    f"({min(seconds):.2f}–{max(seconds):.2f}) | {ratio} | {max(r.peak_rss_mb for r in runs):.0f} |")
    return "\n".join(rows)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: how busy the shared machine was."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def machine(device: str) -> str:
    return f"{device_name(resolve_device(device))}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3; the labs use 10)")
    parser.add_argument("--recipes", default="mnist-mlp,mnist-cnn,fashion-cnn,cifar10-cnn")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--keras", default=None,
                        help="Keras variants, comma-separated, of: " + ", ".join(KERAS_VARIANTS)
                        + " (default: installed,onednn on a CPU, jax on a GPU); 'none' skips Keras")
    parser.add_argument("--engines", default=None,
                        help="cnnlab engines, each optionally with a mixed precision: fast+bf16 "
                        "(default: fast,plain on a CPU, fast,graph on a GPU)")
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times, interleaved")
    parser.add_argument("--keras-python",
                        help="a Python with Keras installed (default: bench/.venv-keras, made if missing)")
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_SAMPLE)
    parser.add_argument("--fashion-dir", type=Path, help="Fashion-MNIST's folder (default: where cnnlab finds it)")
    parser.add_argument("--cli", action="store_true", help="also time the whole `cnnlab train fashion-cnn` command")
    parser.add_argument("--threads", type=int, help="cap both frameworks' CPU threads (default: each its own)")
    args = parser.parse_args()
    if args.threads:
        THREADS.update({name: str(args.threads) for name in
                        ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")})

    gpu = args.device.startswith("cuda")
    variants = [v for v in (args.keras or ("jax" if gpu else "installed,onednn")).split(",") if v and v != "none"]
    engines = (args.engines or ("fast,graph" if gpu else "fast,plain")).split(",")
    python = keras_python(args.keras_python) if variants else ""
    reference = f"Keras, {KERAS_VARIANTS[variants[0]][0]}" if variants else runner_label(engines[-1])
    results: list[Result] = []
    started, load_at_start = time.strftime("%Y-%m-%d %H:%M"), load_average()
    with tempfile.TemporaryDirectory() as folder:
        for recipe_name in args.recipes.split(","):
            data, what = write_split(recipe_name, Path(folder), args.mnist_dir, args.fashion_dir)
            print(f"{recipe_name}: {what}, {args.epochs} epochs", file=sys.stderr)
            for _ in range(args.repeat):
                for variant in variants:
                    results.append(run_keras(python, variant, recipe_name, data, args.epochs))
                    print(f"  {results[-1].runner}: {results[-1].per_epoch:.2f} s/epoch, load average {load_average()}",
                          file=sys.stderr)
                for engine in engines:
                    results.append(run_cnnlab(engine, args.device, recipe_name, data, args.epochs))
                    print(f"  {results[-1].runner}: {results[-1].per_epoch:.2f} s/epoch, load average {load_average()}",
                          file=sys.stderr)

    print(f"{machine(args.device)}; {started} to {time.strftime('%Y-%m-%d %H:%M')}; {args.epochs} epochs a run, "
          f"{args.repeat} run(s) each; load average at the start {load_at_start}, at the end {load_average()}"
          + (f"; threads capped at {args.threads}" if args.threads else ""))
    for versions in dict.fromkeys(r.versions for r in results):
        print(f"- {versions}")
    print()
    print(table(results, "gpu" if gpu else "cpu", reference))
    if args.repeat > 1:
        print()
        print(spread(results, "gpu" if gpu else "cpu", reference))
    if args.cli:
        for engine in engines:
            seconds = time_cli("fashion-cnn", args.device, engine, args.fashion_dir)
            print(f"\n`cnnlab train fashion-cnn` with {engine} (10 epochs), start to exit: {seconds:.1f} s")


if __name__ == "__main__":
    main()
