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
    run_dir = train_recipe(recipe, data_dir=args.data_dir, runs_dir=args.runs_dir, verbose=not args.quiet,
                           tensorboard=args.tensorboard)
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
    from rich.console import Console

    from .evaluation import describe_confused, evaluate_run, format_scores

    evaluation, files = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device)
    print(f"Test loss: {evaluation.loss:.4f} - test accuracy: {evaluation.accuracy:.4f}")
    Console(highlight=False).print(format_scores(evaluation))
    print("Most confused (true → predicted):", *describe_confused(evaluation) or ["none"], sep="\n  ")
    print(f"Wrote {len(files)} files to {files[0].parent}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain import describe_stages, explain_run

    explanation = explain_run(args.run_dir, args.image, index=args.index, data_dir=args.data_dir, device=args.device)
    truth = f" (true: {explanation.label})" if explanation.label is not None else ""
    print(f"{explanation.source}: predicted {explanation.predicted} ({explanation.probability:.1%}){truth}")
    print(describe_stages(explanation))
    print(*explanation.notes, *explanation.files, sep="\n")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(args.run_dir, data_dir=args.data_dir, device=args.device))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .compare import compare_runs, format_differences, format_runs, list_runs

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: no screen to fit, so never cut a run's name short
        console.width = 200
    if args.items[:1] == ["compare"]:
        records, differences, figure = compare_runs(args.items[1:], out=args.out)
        console.print(format_differences(records, differences))
        print(figure)
        return 0
    if len(args.items) > 1:
        raise UsageError(f"runs {' '.join(args.items)}: give one folder to list, or `runs compare RUN RUN...`")
    folder = args.items[0] if args.items else "runs"
    records = list_runs(folder)
    console.print(format_runs(records) if records else f"no runs in {folder}")
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
    train.add_argument("--tensorboard", action="store_true", help="also log each epoch for TensorBoard under "
                                                                  "RUN_DIR/tensorboard (needs cnnlab[tensorboard])")
    train.set_defaults(func=_train)

    recipes = commands.add_parser("recipes", help="list the recipes, or show one in full")
    recipes.add_argument("name", nargs="?", help="a recipe to show field by field")
    recipes.set_defaults(func=_recipes)

    def run_command(name: str, func, summary: str) -> argparse.ArgumentParser:
        """A subcommand that reads one run folder and its test data."""
        command = commands.add_parser(name, help=summary)
        command.add_argument("run_dir", type=Path, help="a run folder written by `cnnlab train`")
        command.add_argument("--data-dir", help="folder holding the data set's files")
        command.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
        command.set_defaults(func=func)
        return command

    run_command("evaluate", _evaluate, "reload a run and evaluate it on its test set: per-class scores, "
                                       "confusion matrix, worst mistakes")
    explain = run_command("explain", _explain, "draw what a run's network sees: filters, feature maps and the "
                                               "pixels behind a prediction")
    explain.add_argument("image", nargs="?", type=Path, help="an image file (default: a test image, see --index)")
    explain.add_argument("--index", type=int, default=0, help="which test image, when no IMAGE is given (default 0)")
    run_command("report", _report, "write one self-contained HTML page about a run")

    runs = commands.add_parser("runs", help="list the runs in a folder, or `runs compare RUN RUN...`",
                               usage="cnnlab runs [DIR] | cnnlab runs compare RUN RUN... [--out PNG]")
    runs.add_argument("items", nargs="*", metavar="DIR | compare RUN...",
                      help="a folder of runs to list (default: runs), or 'compare' and two or more run folders")
    runs.add_argument("--out", type=Path, help="with compare: where the figure goes (default: compare.png "
                                               "beside the first run)")
    runs.set_defaults(func=_runs)
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
