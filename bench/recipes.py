"""Recipe benchmark: test accuracy over seeds and training time, on this machine's CPU or GPU.

    PYTHONPATH=. python bench/recipes.py fashion-cpu --seeds 3
    PYTHONPATH=. python bench/recipes.py mnist-cpu --seeds 3 --data-dir ../shared/datasets/mnist-sample
    PYTHONPATH=. python bench/recipes.py fashion-fast fashion-best mnist-fast cifar10-fast --seeds 5   # a GPU
    PYTHONPATH=. python bench/recipes.py --airbench --seeds 5   # a GPU, after `pip install -e '.[airbench]'`

Accuracy is on the untouched test set, after training on the recipe's training split; nothing here tunes on
it. Training time is timed as airbench times it: from the start of ``fit`` (normalisation statistics and
data-driven initialisation included) to its end, less the per-epoch validation, with the GPU synchronised
at each boundary, after one warm-up run that is not counted. ``--airbench`` times the ``airbench`` package's
``train94`` and cnnlab's ``cifar10-fast`` side by side on the same random CIFAR-10-shaped tensors (no real
CIFAR-10 here): a speed comparison only, whose accuracies mean nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import cnnlab.loop
from cnnlab import ImageSet, create_model, get_recipe, load_dataset, resolve_device, split
from cnnlab.device import device_name
from cnnlab.inference import Inference
from cnnlab.loop import evaluate, fit, start_state
from cnnlab.recipes import Recipe, with_overrides


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ValidationClock:
    """Wraps ``cnnlab.loop.evaluate``, which ``fit`` calls once an epoch, to add up the time it takes."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.cpu_seconds = device, 0.0, 0.0

    def __enter__(self):
        def timed(*args, **kwargs):
            sync(self.device)
            started, cpu_started = time.perf_counter(), time.process_time()
            result = evaluate(*args, **kwargs)
            sync(self.device)
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu_started
            return result

        cnnlab.loop.evaluate = timed
        return self

    def __exit__(self, *exc):
        cnnlab.loop.evaluate = evaluate


def train_once(recipe: Recipe, train: ImageSet, val: ImageSet, test: ImageSet, device: torch.device) -> dict:
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model, tuple(train.images.shape[1:]), len(train.classes))
    with ValidationClock(device) as validation:
        sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        state = start_state(model, recipe, train, device)
        history = fit(model, train, val, recipe, device, state=state, verbose=False)
        sync(device)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # fit leaves the weights it validated (the average, when the recipe keeps one) in the model
    accuracy = evaluate(Inference(model, state.normalization), test, recipe, device)["accuracy"]
    return {"accuracy": accuracy, "val_accuracy": history[-1].val_accuracy, "train_s": wall - validation.seconds,
            "validation_s": validation.seconds, "cpu_s": cpu - validation.cpu_seconds}


def machine(device: torch.device) -> str:
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"{device_name(device)}{threads}"


def mean_sd(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def bench_recipe(name: str, seeds: range, data_dir: str | None, device_choice: str, overrides: dict[str, str]) -> str:
    recipe = with_overrides(get_recipe(name), overrides)
    device = resolve_device(device_choice if device_choice != "auto" else recipe.device)
    recipe = replace(recipe.resolved(), device=str(device))
    train_all, test = load_dataset(recipe.dataset, data_dir)
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed)
    train, val, test = (ImageSet(s.images.to(device), s.labels.to(device), s.classes) for s in (train, val, test))
    warm_up = train if device.type == "cuda" else train.subset(torch.arange(2048))  # kernels chosen, not counted
    train_once(replace(recipe, epochs=1), warm_up, val, test, device)
    runs = []
    for seed in seeds:
        load = os.getloadavg()[0]
        run = train_once(replace(recipe, seed=seed), train, val, test, device)
        runs.append(run)
        print(f"  {name} seed {seed}: validation accuracy {run['val_accuracy']:.4f}, test accuracy "
              f"{run['accuracy']:.4f}, training {run['train_s']:.1f} s "
              f"(+{run['validation_s']:.1f} s validation), {run['cpu_s']:.0f} s of CPU in training, "
              f"load average {load:.1f}",
              file=sys.stderr, flush=True)
    accuracy = mean_sd([100 * r["accuracy"] for r in runs], 2)
    seconds = mean_sd([r["train_s"] for r in runs], 1 if device.type == "cpu" else 2)
    return (f"| {name} | {recipe.dataset} ({len(train):,} train) | {accuracy} % | {len(seeds)} | {seconds} s | "
            f"{machine(device)} |")


# ---------------------------------------------------------------------------------------------------------
# airbench side by side, on random tensors of CIFAR-10's shape
# ---------------------------------------------------------------------------------------------------------
def bench_airbench(seeds: int) -> list[str]:
    import airbench

    device = torch.device("cuda")
    generator = torch.Generator().manual_seed(0)
    images = {"train": torch.randint(0, 256, (50_000, 32, 32, 3), dtype=torch.uint8, generator=generator),
              "test": torch.randint(0, 256, (10_000, 32, 32, 3), dtype=torch.uint8, generator=generator)}
    labels = {part: torch.randint(0, 10, (len(images[part]),), generator=generator) for part in images}
    folder = Path(tempfile.mkdtemp()) / "cifar10"
    folder.mkdir()
    for part in images:  # the files airbench's CifarLoader reads
        torch.save({"images": images[part], "labels": labels[part], "classes": list(range(10))},
                   folder / f"{part}.pt")
    os.chdir(folder.parent)  # train94 opens 'cifar10/test.pt' itself

    def airbench_run() -> float:
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=1024,
                                      aug={"flip": True, "translate": 2}, altflip=True)
        sync(device)
        started = time.perf_counter()
        airbench.train94(loader, verbose=False)
        sync(device)
        return time.perf_counter() - started

    recipe = replace(get_recipe("cifar10-fast").resolved(), device="cuda")
    as_set = {part: ImageSet(images[part].permute(0, 3, 1, 2).contiguous().to(device), labels[part].to(device),
                             tuple(map(str, range(10)))) for part in images}
    val = ImageSet(as_set["test"].images[:1000], as_set["test"].labels[:1000], as_set["test"].classes)

    def cnnlab_run(seed: int) -> float:
        return train_once(replace(recipe, seed=seed), as_set["train"], val, as_set["test"], device)["train_s"]

    airbench_run(), cnnlab_run(0)  # warm-up, not counted
    ours, theirs = [], []
    for seed in range(seeds):  # alternate, so drift in clocks or temperature hits both alike
        theirs.append(airbench_run())
        ours.append(cnnlab_run(seed))
    name = machine(device)
    return [f"| airbench 0.1.8 train94 | random CIFAR-10-shaped tensors (50,000) | — | {seeds} | "
            f"{mean_sd(theirs, 2)} s | {name} |",
            f"| cnnlab cifar10-fast | the same tensors (50,000) | — | {seeds} | {mean_sd(ours, 2)} s | {name} |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (see `cnnlab recipes`)")
    parser.add_argument("--seeds", type=int, default=3, help="how many runs, one seed each")
    parser.add_argument("--first-seed", type=int, default=0, help="to add runs to earlier ones")
    parser.add_argument("--data-dir", help="folder with the data set's files (e.g. the MNIST sample)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="replace a recipe field")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--airbench", action="store_true", help="also time airbench's train94 against cifar10-fast")
    args = parser.parse_args(argv)
    if not args.recipes and not args.airbench:
        parser.error("name at least one recipe, or --airbench")

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {' '.join(sys.argv[1:])}", flush=True)
    print("| recipe | data | test accuracy (mean ± sd) | n | training time (mean ± sd) | device |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for name in args.recipes:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        print(bench_recipe(name, seeds, args.data_dir, args.device, overrides), flush=True)
    if args.airbench:
        print("\n".join(bench_airbench(args.seeds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
