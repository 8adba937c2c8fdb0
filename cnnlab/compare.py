"""Runs side by side: the table of the runs in a folder, and several runs' curves in one figure with the recipe
fields that set them apart. Reads each run's JSON and CSV files through ``cnnlab.runs.Run``, never its weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .files import check_replaceable
from .runs import Run

if TYPE_CHECKING:
    from rich.table import Table


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def format_runs(runs: list[Run]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table("run", "recipe", "data", "epochs", "best val acc", "test acc", "time", "device", "date",
                  box=box.SIMPLE_HEAD, show_edge=False)
    for r in runs:
        start = r.started_from  # a run started from another's trained layers names it
        recipe = r.recipe.name + (f" (from {start['run']})" if start else "")
        table.add_row(r.run_dir.name, recipe, r.recipe.dataset, f"{len(r.history)}/{r.recipe.epochs}",
                      _score(r.best_val_accuracy), _score(r.test_accuracy), f"{r.seconds:.1f}s",
                      r.environment.get("device", "?"), r.created[:16].replace("T", " ") or "?")
    return table


# ---------------------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------------------
def recipe_differences(runs: list[Run]) -> dict[str, list[Any]]:
    """The recipe fields whose values are not the same in every run: field → one value per run."""
    values = [r.recipe.to_dict() for r in runs]
    return {field: [v[field] for v in values] for field in values[0]
            if any(v[field] != values[0][field] for v in values)}


def compare_runs(runs: list[Run | str | os.PathLike], out: str | os.PathLike | None = None, force: bool = False
                 ) -> tuple[list[Run], dict[str, list[Any]], Path]:
    """The runs, how their recipes differ, and a figure of their curves (default: ``compare.png`` beside them).

    An existing file at ``out`` is replaced only if cnnlab wrote it, or with ``force``."""
    if isinstance(runs, (str, os.PathLike, Run)) or len(runs) < 2:  # one path is not its characters
        raise UsageError("runs compare: give two or more run folders to compare")
    read = [run if isinstance(run, Run) else Run(run).check() for run in runs]
    path = Path(out) if out is not None else read[0].run_dir.parent / "compare.png"
    check_replaceable(path, force)
    plot_comparison(read, path)
    return read, recipe_differences(read), path


def plot_comparison(runs: list[Run], path: Path) -> None:
    """Accuracy and loss per epoch for every run, one colour per run: validation solid, training dashed."""
    from .plots import epoch_axis, plt, save_figure

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        epochs = [row.epoch for row in run.history]
        for axis, metric in zip(axes, ("accuracy", "loss")):
            axis.plot(epochs, [getattr(row, f"val_{metric}") for row in run.history], "o-", color=colour,
                      label=f"{run.run_dir.name} (validation)")
            axis.plot(epochs, [getattr(row, metric) for row in run.history], "--", color=colour, alpha=0.6,
                      label=f"{run.run_dir.name} (train)")
    for axis, metric in zip(axes, ("accuracy", "loss")):
        epoch_axis(axis)
        axis.set_ylabel(metric)
        axis.set_title(f"{metric.capitalize()} per epoch")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    save_figure(figure, path)


def format_differences(runs: list[Run], differences: dict[str, list[Any]]) -> Table:
    """Field by run for the fields that differ, then each run's best validation and test accuracy."""
    from rich.table import Table

    table = Table("", *(r.run_dir.name for r in runs), title="How the runs differ", title_justify="left")
    for field, values in differences.items():
        table.add_row(field, *map(str, values))
    if not differences:
        table.add_row("(recipe)", *["same"] * len(runs))
    table.add_section()
    table.add_row("best val acc", *(_score(r.best_val_accuracy) for r in runs))
    table.add_row("test acc", *(_score(r.test_accuracy) for r in runs))
    return table
