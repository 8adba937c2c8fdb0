"""Run folders: everything needed to understand and reload a training run, written atomically.

A run folder holds ``recipe.json`` (the resolved recipe), ``model.json`` (what rebuilds the network and how
its input was prepared), ``weights.safetensors``, ``history.csv``, ``metrics.json``, ``environment.json``
and the tutorial's figures. Nothing in it is ever unpickled.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import Normalization
from .errors import CnnlabError
from .recipes import Recipe, recipe_from_dict
from .train import EpochResult

RUN_FORMAT = "cnnlab-run/1"
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


# ---------------------------------------------------------------------------------------------------------
# Atomic files: a crash mid-write leaves the previous file whole
# ---------------------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 would hide runs from other users


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {Path(path).parent} a cnnlab run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CnnlabError(f"{path}: not valid JSON ({error}); the run folder is damaged") from None


def write_history(path: Path, history: list[EpochResult]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for row in history:
        writer.writerow([row.epoch] + [f"{getattr(row, k):.6g}" for k in HISTORY_FIELDS[1:]])
    atomic_write(path, out.getvalue())


def read_history(path: Path) -> list[EpochResult]:
    with open(path, newline="") as f:
        return [EpochResult(int(r["epoch"]), *(float(r[k]) for k in HISTORY_FIELDS[1:]))
                for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------------------
# Weights: safetensors, checked on the way in
# ---------------------------------------------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"format": RUN_FORMAT}))


def load_weights(path: Path, model: nn.Module) -> nn.Module:
    """Load ``path`` into ``model``, refusing missing or extra keys, wrong shapes and non-finite values."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; the run has no weights (did training finish?)") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise CnnlabError(f"{path}: not a readable safetensors file ({error}); the run folder is damaged") from None
    expected = model.state_dict()
    missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or extra:
        raise CnnlabError(f"{path}: weights do not fit the model (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(extra)[:3]}); the run folder is damaged or from another model")
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise CnnlabError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model needs "
                              f"{tuple(expected[key].shape)}; the run folder is damaged")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CnnlabError(f"{path}: {key} holds NaN or infinite values; the weights are unusable")
    model.load_state_dict(tensors)
    return model


# ---------------------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------------------
def new_run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """A fresh folder ``runs_dir/name-YYYYMMDD-HHMMSS`` (with a suffix if that exists), checked writable."""
    runs_dir = Path(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for suffix in [""] + [f"-{i}" for i in range(2, 1000)]:
            run_dir = runs_dir / f"{name}-{stamp}{suffix}"
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise CnnlabError(f"cannot write runs under {runs_dir} ({error.strerror or error}); "
                          "choose another folder with --runs-dir") from None
    return run_dir


def environment(device: torch.device) -> dict[str, Any]:
    from . import __version__

    info = {"cnnlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "device": str(device), "cpu_threads": torch.get_num_threads(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


@dataclass
class ModelInfo:
    """What rebuilds the network of a run and prepares an image the way its training data was prepared."""

    model: str  # a key of cnnlab.models.MODELS
    in_shape: tuple[int, int, int]  # (C, H, W)
    classes: tuple[str, ...]
    dataset: str
    normalization: Normalization | None = None  # the training split's per-channel statistics, when normalised
    format: str = RUN_FORMAT

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> "ModelInfo":
        if data.get("format") != RUN_FORMAT:
            raise CnnlabError(f"{source}: format {data.get('format')!r} is not {RUN_FORMAT!r}; "
                              "was it written by another version of cnnlab?")
        try:
            stats = data.get("normalization")
            normalization = (Normalization(tuple(float(v) for v in stats["mean"]), tuple(float(v) for v in stats["std"]))
                             if stats is not None else None)
            return cls(model=str(data["model"]), in_shape=tuple(int(v) for v in data["in_shape"]),  # type: ignore
                       classes=tuple(str(c) for c in data["classes"]), dataset=str(data["dataset"]),
                       normalization=normalization)
        except (KeyError, TypeError, ValueError) as error:
            raise CnnlabError(f"{source}: missing or malformed field ({error}); the run folder is damaged") from None


@dataclass
class Run:
    """A run folder, loaded: its recipe, its rebuilt model with weights, and what it recorded."""

    run_dir: Path
    recipe: Recipe
    info: ModelInfo
    model: nn.Module
    history: list[EpochResult]
    metrics: dict[str, Any]


def save_run_files(run_dir: Path, recipe: Recipe, info: ModelInfo, device: torch.device) -> None:
    write_json(run_dir / "recipe.json", recipe.to_dict())
    write_json(run_dir / "model.json", asdict(info))
    write_json(run_dir / "environment.json", environment(device))


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild a run's model from its folder (JSON and safetensors only) and read what it recorded."""
    from .models import create_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = recipe_from_dict(read_json(run_dir / "recipe.json"))
    info = ModelInfo.from_dict(read_json(run_dir / "model.json"), run_dir / "model.json")
    model = load_weights(run_dir / "weights.safetensors", create_model(info.model, info.in_shape, len(info.classes)))
    model.eval()
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    return Run(run_dir, recipe, info, model, history, metrics)


# ---------------------------------------------------------------------------------------------------------
# A recipe, start to finish: the tutorial's steps 1–11 into one run folder
# ---------------------------------------------------------------------------------------------------------
def train_recipe(recipe: Recipe, data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 verbose: bool = True) -> Path:
    """Load and split the data, build the model, fit, evaluate on the test set, save everything; the run folder."""
    from rich.console import Console

    from . import plots
    from .data import load_dataset, split
    from .models import count_params, create_model, summarize
    from .predict import predict
    from .train import evaluate, fit, resolve_device, start_state

    console = Console(quiet=not verbose, highlight=False)
    recipe = recipe.resolved()
    device = resolve_device(recipe.device)
    run_dir = new_run_dir(runs_dir, recipe.name)  # before the data: an unwritable folder fails fast

    train_all, test = load_dataset(recipe.dataset, data_dir)
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed)
    console.print(f"{recipe.name}: {recipe.dataset} — {len(train):,} train / {len(val):,} validation / "
                  f"{len(test):,} test images, on {device}")

    torch.manual_seed(recipe.seed)  # the initial weights, then dropout
    in_shape = tuple(train.images.shape[1:])
    model = create_model(recipe.model, in_shape, len(train.classes))  # type: ignore[arg-type]
    console.print(format_summary(recipe.model, summarize(model, in_shape), count_params(model)))

    started = time.perf_counter()  # statistics and a data-driven set-up count as training, as airbench counts them
    state = start_state(model, recipe, train, device)
    setup_seconds = time.perf_counter() - started
    info = ModelInfo(recipe.model, in_shape, train.classes, recipe.dataset,  # type: ignore[arg-type]
                     state.normalization)
    save_run_files(run_dir, recipe, info, device)
    plots.plot_sample(train.images[0], int(train.labels[0]), train.classes, run_dir / "sample.png")

    def checkpoint(state) -> None:
        write_history(run_dir / "history.csv", state.history)

    started = time.perf_counter()
    history = fit(model, train, val, recipe, device, state=state, on_epoch_end=checkpoint, verbose=verbose)
    train_seconds = setup_seconds + time.perf_counter() - started

    test_metrics = evaluate(model, test, recipe, device, normalization=info.normalization)
    console.print(f"Test loss: {test_metrics['loss']:.4f} - test accuracy: {test_metrics['accuracy']:.4f}")
    save_weights(run_dir / "weights.safetensors", model)
    best = max(history, key=lambda row: row.val_accuracy)
    write_json(run_dir / "metrics.json", {
        "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
        "best_val_accuracy": best.val_accuracy, "best_epoch": best.epoch,
        "final_val_accuracy": history[-1].val_accuracy, "epochs": len(history),
        "train_seconds": round(train_seconds, 3), "parameters": count_params(model),
    })

    plots.plot_curves(history, "accuracy", run_dir / "accuracy.png")
    plots.plot_curves(history, "loss", run_dir / "loss.png")
    picks = torch.randperm(len(test), generator=torch.Generator().manual_seed(recipe.seed))[:3]
    guesses = predict(model, test.images[picks], device, info.normalization, recipe.tta)
    plots.plot_predictions(test.images[picks], test.labels[picks].tolist(), guesses.tolist(), test.classes,
                           run_dir / "predictions.png")
    return run_dir


def format_summary(name: str, rows, total: int) -> "Table":
    """The model summary as a rich table: layer, output shape, parameters, then the total."""
    from rich.table import Table

    table = Table(title=f'Model: "{name}"', title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    for row in rows:
        table.add_row(f"{row.name} ({row.kind})", str((None, *row.output_shape)), f"{row.params:,}")
    table.caption = f"Total params: {total:,}"
    table.caption_justify = "left"
    return table
