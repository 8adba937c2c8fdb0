"""Starting from a network you trained against starting from scratch, on drawn shapes (issue #21).

    PYTHONPATH=. .venv/bin/python bench/transfer.py [--seeds 5] [--train 20] [--test 30] [--set FIELD=VALUE ...]

Draws circles, crosses and lines as a learner draws them with the mouse on the studio's 280×280 canvas
(``draw_shape`` in tests/helpers.py: a random place, size and angle, the stroke's width jittered, the path
wobbly): ``--train`` a class to train on and ``--test`` new ones a class, held out as the folder's test/. Trains
lab 3's CNN once on the MNIST sample (recipe ``mnist-cnn`` as the course runs it, 10 epochs; kept in
``--cache`` and reused), then the ``teach`` recipe from scratch and from that run (``--from``), with each seed
drawing its own shapes and seeding its own training. Prints a Markdown table: held-out accuracy per seed, the
median and range, the training seconds (indicative on a shared machine), the CPU, the date and the load.
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
from cnnlab import Run, get_recipe, train_folder, train_recipe, with_overrides  # noqa: E402
from cnnlab.recipes import parse_value  # noqa: E402
from helpers import MNIST_SAMPLE, SHAPES, make_shape_folder  # noqa: E402  (the tests' drawn shapes)

BODY_RECIPE = "mnist-cnn"  # lab 3 as the course runs it: what a learner has trained before the Teach view


def cpu_model() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def body_run(cache: Path, data_dir: Path) -> Run:
    """The MNIST run to start from: the newest finished one in ``cache``, else one trained now."""
    finished = [run for run in map(Run, sorted(cache.glob(f"{BODY_RECIPE}-*"))) if run.finished]
    if finished:
        return finished[-1]
    print(f"training {BODY_RECIPE} on {data_dir} into {cache} (once; later runs reuse it)", file=sys.stderr)
    recipe = with_overrides(get_recipe(BODY_RECIPE), {"device": "cpu"})
    return Run(train_recipe(recipe, data_dir=data_dir, runs_dir=cache, verbose=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per start (default 5)")
    parser.add_argument("--train", type=int, default=20, help="drawings a class to train on (default 20)")
    parser.add_argument("--test", type=int, default=30, help="new drawings a class held out (default 30)")
    parser.add_argument("--data-dir", type=Path, default=MNIST_SAMPLE, help="MNIST's files, for the run started from")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench-transfer",
                        help="where the MNIST run is kept (default: runs/bench-transfer, git-ignored)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replace a field of the teach recipe, in both starts (repeatable)")
    args = parser.parse_args()

    overrides: dict[str, object] = {"device": "cpu"}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = parse_value(field, value)
    body = body_run(args.cache, args.data_dir)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    results: dict[str, list[tuple[float, float]]] = {"scratch": [], "from": []}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.seeds):
            folder = make_shape_folder(Path(scratch) / f"shapes-{seed}", args.train, seed=seed, part="train")
            make_shape_folder(folder, args.test, seed=10_000 + seed, part="test")  # new drawings, never trained on
            recipe = with_overrides(get_recipe("teach"), {**overrides, "seed": seed})
            for start, from_run in (("scratch", None), ("from", body)):
                run = Run(train_folder(folder, recipe, from_run=from_run, runs_dir=Path(scratch) / "runs",
                                       verbose=False))
                results[start].append((run.metrics["test_accuracy"], run.metrics["train_seconds"]))
                print(f"seed {seed} {start}: {results[start][-1][0]:.1%} in {results[start][-1][1]:.1f} s",
                      file=sys.stderr, flush=True)

    def cell(accuracy: float, seconds: float) -> str:
        return f"{accuracy:.1%} ({seconds:.1f} s)"

    recipe = with_overrides(get_recipe("teach"), overrides)
    changed = ", ".join(item for item in args.set) or "as shipped"
    print(f"`teach` ({changed}: {recipe.model}, {recipe.epochs} epochs, batch {recipe.batch_size}, "
          f"{recipe.optimizer}, translate {recipe.translate}, freeze_epochs {recipe.freeze_epochs}) on "
          f"{args.train} drawn {'/'.join(SHAPES)} a class; held-out accuracy on {args.test} new drawings a class "
          f"(training seconds). `--from`: {body.run_dir.name}, {BODY_RECIPE} on {args.data_dir.name} "
          f"({body.metrics['test_accuracy']:.1%} test accuracy, {body.metrics['train_seconds']:.0f} s).\n")
    print("| seed | from scratch | from the MNIST run |")
    print("|---|---|---|")
    for seed in range(args.seeds):
        print(f"| {seed} | {cell(*results['scratch'][seed])} | {cell(*results['from'][seed])} |")
    for name, pick in (("median", statistics.median), ("min", min), ("max", max)):
        print(f"| {name} | " + " | ".join(
            f"{pick(a for a, _ in results[start]):.1%} ({pick(s for _, s in results[start]):.1f} s)"
            for start in ("scratch", "from")) + " |")
    print(f"\n{cpu_model()}, {os.cpu_count()} CPUs, shared with other work; {started}; load average "
          f"{load_before} before, {load_average()} after.")


if __name__ == "__main__":
    main()
