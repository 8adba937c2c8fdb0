"""Runs side by side: a table of the runs in a folder, and several runs' curves in one figure with the recipe
fields that set them apart. Reads only each run's JSON and CSV files, never its weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError, UsageError, warn
from .recipes import Recipe
from .files import read_json
from .history import EpochResult, read_history
from .runs import read_recipe

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class RunRecord:
    """What a run folder says about itself; metrics are None where training did not finish."""

    run_dir: Path
    recipe: Recipe
    history: list[EpochResult]
    metrics: dict[str, Any]
    environment: dict[str, Any]

    @property
    def best_val_accuracy(self) -> float | None:
        return max((row.val_accuracy for row in self.history), default=None)

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    @property
    def seconds(self) -> float:  # training time, or the epochs' own times for an unfinished run
        return self.metrics.get("train_seconds", sum(row.seconds for row in self.history))


def read_record(run_dir: str | os.PathLike) -> RunRecord:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.json").is_file():
        raise CnnlabError(f"{run_dir}: not a cnnlab run folder (no recipe.json)")

    def optional_json(name: str) -> dict[str, Any]:
        return read_json(run_dir / name) if (run_dir / name).is_file() else {}

    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
    return RunRecord(run_dir, read_recipe(run_dir / "recipe.json"), history,
                     optional_json("metrics.json"), optional_json("environment.json"))


def scan_runs(runs_dir: str | os.PathLike = "runs") -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every run folder directly under ``runs_dir``, oldest first, and the damaged ones with what is wrong."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CnnlabError(f"{runs_dir}: no such folder; `cnnlab train` writes runs under ./runs (or --runs-dir)")
    records, damaged = [], []
    for folder in sorted(runs_dir.iterdir()):
        if (folder / "recipe.json").is_file():
            try:
                records.append(read_record(folder))
            except CnnlabError as error:
                damaged.append((folder, str(error)))
    return sorted(records, key=lambda r: (r.environment.get("created", ""), r.run_dir.name)), damaged


def list_runs(runs_dir: str | os.PathLike = "runs") -> list[RunRecord]:
    """``scan_runs``'s runs; a damaged one is named in a warning and left out, so one bad folder never hides
    the others."""
    records, damaged = scan_runs(runs_dir)
    for _, message in damaged:
        warn(f"skipped {message}")
    return records


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def format_runs(records: list[RunRecord]) -> "Table":
    from rich import box
    from rich.table import Table

    table = Table("run", "recipe", "data", "epochs", "best val acc", "test acc", "time", "device", "date",
                  box=box.SIMPLE_HEAD, show_edge=False)
    for r in records:
        table.add_row(r.run_dir.name, r.recipe.name, r.recipe.dataset, f"{len(r.history)}/{r.recipe.epochs}",
                      _score(r.best_val_accuracy), _score(r.test_accuracy), f"{r.seconds:.1f}s",
                      r.environment.get("device", "?"), r.environment.get("created", "?")[:16].replace("T", " "))
    return table


# ---------------------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------------------
def recipe_differences(records: list[RunRecord]) -> dict[str, list[Any]]:
    """The recipe fields whose values are not the same in every run: field → one value per run."""
    values = [r.recipe.to_dict() for r in records]
    return {field: [v[field] for v in values] for field in values[0]
            if any(v[field] != values[0][field] for v in values)}


def compare_runs(run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None
                 ) -> tuple[list[RunRecord], dict[str, list[Any]], Path]:
    """The runs, how their recipes differ, and a figure of their curves (default: ``compare.png`` beside them)."""
    if len(run_dirs) < 2:
        raise UsageError("runs compare: give two or more run folders to compare")
    records = [read_record(d) for d in run_dirs]
    path = Path(out) if out is not None else records[0].run_dir.parent / "compare.png"
    plot_comparison(records, path)
    return records, recipe_differences(records), path


def plot_comparison(records: list[RunRecord], path: Path) -> None:
    """Accuracy and loss per epoch for every run, one colour per run: validation solid, training dashed."""
    from .plots import epoch_axis, plt, save_figure

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, record in enumerate(records):
        colour = f"C{i % 10}"
        epochs = [row.epoch for row in record.history]
        for axis, metric in zip(axes, ("accuracy", "loss")):
            axis.plot(epochs, [getattr(row, f"val_{metric}") for row in record.history], "o-", color=colour,
                      label=f"{record.run_dir.name} (validation)")
            axis.plot(epochs, [getattr(row, metric) for row in record.history], "--", color=colour, alpha=0.6,
                      label=f"{record.run_dir.name} (train)")
    for axis, metric in zip(axes, ("accuracy", "loss")):
        epoch_axis(axis)
        axis.set_ylabel(metric)
        axis.set_title(f"{metric.capitalize()} per epoch")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    save_figure(figure, path)


def format_differences(records: list[RunRecord], differences: dict[str, list[Any]]) -> "Table":
    """Field by run for the fields that differ, then each run's best validation and test accuracy."""
    from rich.table import Table

    table = Table("", *(r.run_dir.name for r in records), title="How the runs differ", title_justify="left")
    for field, values in differences.items():
        table.add_row(field, *map(str, values))
    if not differences:
        table.add_row("(recipe)", *["same"] * len(records))
    table.add_section()
    table.add_row("best val acc", *(_score(r.best_val_accuracy) for r in records))
    table.add_row("test acc", *(_score(r.test_accuracy) for r in records))
    return table
