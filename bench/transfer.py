"""Starting from a network you trained against starting from scratch, on drawn shapes (issue #21).

    PYTHONPATH=. .venv/bin/python bench/transfer.py [--seeds 5] [--train 20] [--test 30] [--set FIELD=VALUE ...]

Draws circles, crosses and lines as a learner draws them with the mouse on the studio's 280×280 canvas
(``draw_shape`` in tests/helpers.py: a random place, size and angle, the stroke's width jittered, the path
wobbly): ``--train`` a class to train on and ``--test`` new ones a class, held out as the folder's test/. Trains
each of ``--bodies`` once on the MNIST sample (kept in ``--cache`` and reused): ``mnist-cnn``, lab 3's CNN as the
course runs it (what a learner has trained before the Teach view), and ``mnist-cpu``, cnnlab's BatchNorm CNN
for digits on a CPU (three convolution blocks: what a deeper network you trained brings). Then the ``teach``
recipe from scratch and from each run (``--from``: the run's network, so ``mnist-cpu``'s bn-cnn), each seed
drawing its own shapes and seeding its own training. Prints a Markdown table: held-out accuracy per seed, the
median and range, the training seconds (indicative on a shared machine), the CPU, the date and the load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from cnnlab import Run, get_recipe, resolve_device, train_folder, train_recipe, with_overrides  # noqa: E402
from cnnlab.device import device_name  # noqa: E402
from cnnlab.recipes import parse_value  # noqa: E402
from helpers import MNIST_SAMPLE, SHAPES, make_shape_folder  # noqa: E402  (the tests' drawn shapes)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def body_run(cache: Path, data_dir: Path, name: str) -> Run:
    """The run of recipe ``name`` to start from: the newest finished one in ``cache``, else one trained now."""
    finished = [run for run in map(Run, sorted(cache.glob(f"{name}-2*"))) if run.finished]
    if finished:
        return finished[-1]
    print(f"training {name} on {data_dir} into {cache} (once; later runs reuse it)", file=sys.stderr)
    recipe = with_overrides(get_recipe(name), {"device": "cpu"})
    return Run(train_recipe(recipe, data_dir=data_dir, runs_dir=cache, verbose=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per start (default 5)")
    parser.add_argument("--train", type=int, default=20, help="drawings a class to train on (default 20)")
    parser.add_argument("--test", type=int, default=30, help="new drawings a class held out (default 30)")
    parser.add_argument("--data-dir", type=Path, default=MNIST_SAMPLE, help="MNIST's files, for the runs started from")
    parser.add_argument("--bodies", default="mnist-cnn,mnist-cpu", help="recipes of the MNIST runs to start from")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench-transfer",
                        help="where the MNIST runs are kept (default: runs/bench-transfer, git-ignored)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replace a field of the teach recipe, in both starts (repeatable)")
    args = parser.parse_args()

    overrides: dict[str, object] = {"device": "cpu"}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = parse_value(field, value)
    bodies = {name: body_run(args.cache, args.data_dir, name) for name in args.bodies.split(",")}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    starts: dict[str, Run | None] = {"scratch": None, **bodies}
    results: dict[str, list[tuple[float, float]]] = {start: [] for start in starts}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.seeds):
            folder = make_shape_folder(Path(scratch) / f"shapes-{seed}", args.train, seed=seed, part="train")
            make_shape_folder(folder, args.test, seed=10_000 + seed, part="test")  # new drawings, never trained on
            recipe = with_overrides(get_recipe("teach"), {**overrides, "seed": seed})
            for start, from_run in starts.items():
                run = Run(train_folder(folder, recipe, from_run=from_run, runs_dir=Path(scratch) / "runs",
                                       verbose=False))
                results[start].append((run.metrics["test_accuracy"], run.metrics["train_seconds"]))
                print(f"seed {seed} {start}: {results[start][-1][0]:.1%} in {results[start][-1][1]:.1f} s",
                      file=sys.stderr, flush=True)

    recipe = with_overrides(get_recipe("teach"), overrides)
    changed = ", ".join(item for item in args.set) or "as shipped"
    print(f"`teach` ({changed}: {recipe.model}, {recipe.epochs} epochs, batch {recipe.batch_size}, "
          f"{recipe.optimizer}, translate {recipe.translate}, freeze_epochs {recipe.freeze_epochs}) on "
          f"{args.train} drawn {'/'.join(SHAPES)} a class; held-out accuracy on {args.test} new drawings a class "
          f"(training seconds). The runs started from, trained on {args.data_dir.name}: "
          + "; ".join(f"{name}, a {body.info.model} ({body.metrics['test_accuracy']:.1%} test accuracy, "
                      f"{body.metrics['train_seconds']:.0f} s)" for name, body in bodies.items()) + ".\n")
    print(f"| seed | from scratch ({recipe.model}) | " + " | ".join(f"--from the {name} run ({body.info.model})"
                                                      for name, body in bodies.items()) + " |")
    print("|---" * (1 + len(starts)) + "|")
    for seed in range(args.seeds):
        print(f"| {seed} | " + " | ".join(f"{accuracy:.1%} ({seconds:.1f} s)"
                                          for accuracy, seconds in (results[start][seed] for start in starts)) + " |")
    for name, pick in (("median", statistics.median), ("min", min), ("max", max)):
        print(f"| {name} | " + " | ".join(f"{pick(a for a, _ in results[start]):.1%} "
                                          f"({pick(s for _, s in results[start]):.1f} s)" for start in starts) + " |")
    cpu = device_name(resolve_device("cpu"))
    print(f"\n{cpu}, {os.cpu_count()} CPUs, shared with other work; {started}; load average "
          f"{load_before} before, {load_average()} after.")


if __name__ == "__main__":
    main()
