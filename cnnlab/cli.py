"""The command line: each subcommand parses, makes one library call and prints.

Errors reach the user as one line on stderr: exit code 2 for a bad command or value, 1 for a failure,
130 for Ctrl-C; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CnnlabError, UsageError

# Flags that replace one recipe field each; `--set FIELD=VALUE` reaches every other field.
RECIPE_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "seed", "val_fraction", "device")


def _train(args: argparse.Namespace) -> int:
    from .recipes import get_recipe, with_overrides
    from .runs import train_recipe

    overrides = {field: getattr(args, field) for field in RECIPE_FLAGS if getattr(args, field) is not None}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set label_smoothing=0.1")
        overrides[field.strip().replace("-", "_")] = value
    recipe = with_overrides(get_recipe(args.recipe), overrides)
    run_dir = train_recipe(recipe, data_dir=args.data_dir, runs_dir=args.runs_dir, verbose=not args.quiet)
    print(run_dir)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .recipes import RECIPES, get_recipe

    console = Console(highlight=False)
    if args.name:
        recipe = get_recipe(args.name).resolved()
        table = Table("field", "value", title=recipe.name, title_justify="left")
        for field, value in recipe.to_dict().items():
            table.add_row(field, str(value))
        console.print(table)
        return 0
    table = Table("recipe", "data", "model", "optimizer", "lr", "epochs", "batch", title_justify="left")
    for recipe in RECIPES.values():
        recipe = recipe.resolved()
        table.add_row(recipe.name, recipe.dataset, recipe.model, recipe.optimizer, f"{recipe.lr:g}",
                      str(recipe.epochs), str(recipe.batch_size))
    console.print(table)
    console.print("`cnnlab recipes NAME` shows every field of one recipe.")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .runs import load_run
    from .train import evaluate, resolve_device

    run = load_run(args.run_dir)
    _, test = load_dataset(run.info.dataset, args.data_dir)
    metrics = evaluate(run.model, test, run.recipe, resolve_device(args.device), normalization=run.info.normalization)
    print(f"Test loss: {metrics['loss']:.4f} - test accuracy: {metrics['accuracy']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Train, evaluate and look inside image classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a recipe into a new run folder")
    train.add_argument("recipe", help="a recipe name (see `cnnlab recipes`)")
    train.add_argument("--epochs", help="passes over the training split")
    train.add_argument("--batch-size", dest="batch_size", help="images per optimiser step")
    train.add_argument("--optimizer", help="sgd, adam, adamw, nadam, rmsprop or adagrad")
    train.add_argument("--lr", help="learning rate (default: the optimiser's Keras default)")
    train.add_argument("--seed", help="seed for weights, shuffling and dropout")
    train.add_argument("--val-fraction", dest="val_fraction", help="share of training images held out (0–1)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="replace any recipe field (repeatable)")
    train.add_argument("--data-dir", help="folder holding the data set's files (else CNNLAB_DATA, the cache, "
                                          "/usr/share/datasets, then download)")
    train.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    train.add_argument("--quiet", action="store_true", help="print only the run folder")
    train.set_defaults(func=_train)

    recipes = commands.add_parser("recipes", help="list the recipes, or show one in full")
    recipes.add_argument("name", nargs="?", help="a recipe to show field by field")
    recipes.set_defaults(func=_recipes)

    evaluate = commands.add_parser("evaluate", help="reload a run and evaluate it on its test set")
    evaluate.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
    evaluate.add_argument("--data-dir", help="folder holding the data set's files")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    evaluate.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage line
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except UsageError as error:
        if args.debug:
            raise
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return 2
    except CnnlabError as error:
        if args.debug:
            raise
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
