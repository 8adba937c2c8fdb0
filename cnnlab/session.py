"""A training session: a recipe, start to finish, into a run folder — the tutorial's steps 1–11.

Load and split the data, build the model, fit it (``cnnlab.train``), checkpoint every epoch
(``cnnlab.checkpoint``), then evaluate on the test set and write the weights, figures and metrics
(``cnnlab.runs`` holds the folder's format). One process trains a run folder at a time; under torchrun
every process trains and rank 0 writes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from . import distributed, fast, plots
from .augment import Normalization
from .checkpoint import data_fingerprint, load_checkpoint, save_checkpoint
from .data import ImageSet, load_dataset, split
from .device import resolve_device
from .errors import CnnlabError, UsageError
from .files import check_writable, locked, read_json, write_json
from .history import EpochResult, write_history
from .images import ImageFolder, load_folder
from .inference import Inference, evaluate
from .models import count_params, create_model, summarize
from .predict import predict
from .recipes import Recipe, with_overrides
from .runs import CHECKPOINT, ModelInfo, new_run_dir, read_recipe, recorded_data_dir, save_run_files, save_weights
from .train import TrainState, fit, stall_warning, start_state


# ---------------------------------------------------------------------------------------------------------
# A recipe, start to finish: the tutorial's steps 1–11 into one run folder
# ---------------------------------------------------------------------------------------------------------
def train_recipe(recipe: Recipe, data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 verbose: bool = True, folder: ImageFolder | None = None, tensorboard: bool = False) -> Path:
    """Load and split the data, build the model, fit, evaluate on the test set, save everything; the run folder.

    ``folder`` (from ``cnnlab.images.load_folder``) replaces the recipe's data set: its own val/ replaces the
    split, and without a test/ there is no test evaluation. ``tensorboard`` also logs each epoch under
    ``RUN_DIR/tensorboard/``. Under torchrun every process trains the run, rank 0 writes it (cnnlab.distributed).
    """
    recipe = recipe.resolved()
    device = resolve_device(recipe.device)
    recipe = fast.for_device(recipe, device, distributed.world_size())  # 'auto' decided; recipe.json records it
    if (recipe.dataset == "folder") != (folder is not None):
        raise CnnlabError(f"recipe {recipe.name!r} trains on {recipe.dataset!r}; a folder of your own images "
                          "goes with --data FOLDER (and dataset 'folder')")
    with distributed.process_group(recipe, device) as device:
        # Before the data: an unwritable folder fails fast. Rank 0 makes it and tells the others its name.
        run_dir = distributed.broadcast(new_run_dir(runs_dir, recipe.name) if distributed.is_main() else None)
        with _lock(run_dir):
            board = tensorboard_writer(run_dir / "tensorboard") if tensorboard and distributed.is_main() else None
            return _train_into(run_dir, recipe, device, data_dir, verbose, resume=False, folder=folder, board=board)


def resume_run(run_dir: str | os.PathLike, epochs: int | str | None = None,
               data_dir: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Continue a run from its last checkpoint to the end of its recipe, or to ``epochs`` epochs in all.

    The recipe and the data's folder come from the run folder; the history and weights come out as an
    uninterrupted run on the same device would have given them. A run trained under torchrun resumes under
    torchrun, with as many processes: each reads the checkpoint and takes its own random generators.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = read_recipe(run_dir / "recipe.json")
    if epochs is not None:
        recipe = with_overrides(recipe, {"epochs": epochs})
    if data_dir is None:
        data_dir = recorded_data_dir(read_json(run_dir / "environment.json"))
    with _lock(run_dir):  # before anything is written: a second process on this run stops here
        try:
            if distributed.is_main():
                check_writable(run_dir)
        except OSError as error:
            raise CnnlabError(f"cannot write to {run_dir} ({error.strerror or error}); make it writable") from None
        folder = None
        if recipe.dataset == "folder":  # the same images, prepared the same way, in the same class order
            info = ModelInfo.from_dict(read_json(run_dir / "model.json"), run_dir / "model.json")
            folder = load_folder(info.folder, info.in_shape, info.preprocess, classes=info.classes)
        with distributed.process_group(recipe, resolve_device(recipe.device)) as device:
            return _train_into(run_dir, recipe, device, data_dir, verbose, resume=True, folder=folder)


def _lock(run_dir: Path) -> contextlib.AbstractContextManager:
    """One process trains a run folder at a time; under torchrun rank 0 holds the lock for all of them."""
    return locked(run_dir) if distributed.is_main() else contextlib.nullcontext()


def _train_into(run_dir: Path, recipe: Recipe, device: torch.device, data_dir: str | os.PathLike | None,
                verbose: bool, resume: bool, folder: ImageFolder | None = None, board=None) -> Path:
    main = distributed.is_main()  # the process that prints and writes; the others train beside it
    console = Console(quiet=not (verbose and main), highlight=False, soft_wrap=True)
    if folder is None:
        (train_all, test), val = load_dataset(recipe.dataset, data_dir), None
    else:
        train_all, val, test = folder.train, folder.val, folder.test
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed) if val is None else (train_all, val)
    del train_all  # split copied its images: 47 MB for Fashion-MNIST that training would hold for nothing
    console.print(f"{recipe.name}: {folder.root if folder else recipe.dataset} — {len(train):,} train / "
                  f"{len(val):,} validation / {f'{len(test):,}' if test is not None else 'no'} test images, "
                  f"on {device}{f' ({recipe.autocast} autocast)' if recipe.autocast != 'off' else ''}")
    for note in (fast.precision_note(device, recipe.autocast), fast.engine_note(device, recipe)):
        if note:
            console.print(f"note: {note}")

    torch.manual_seed(recipe.seed)  # the initial weights, then dropout
    in_shape = tuple(train.images.shape[1:])
    model = create_model(recipe.model, in_shape, len(train.classes))  # type: ignore[arg-type]
    if not resume:
        console.print(format_summary(recipe.model, summarize(model, in_shape), count_params(model)))
    state = start_state(model, recipe, train, device)  # on the device first: a checkpoint's moments load beside it
    data = data_fingerprint(train, val)
    checkpoint = run_dir / CHECKPOINT
    if resume:
        trained_on = load_checkpoint(checkpoint, state, device, data)
        if state.epoch > recipe.epochs or state.epoch == recipe.epochs and (run_dir / "metrics.json").exists():
            raise UsageError(f"{run_dir} has trained {state.epoch} epochs already; "
                             f"pass --epochs N, more than {state.epoch}, to train further")
        if main:
            write_json(run_dir / "recipe.json", recipe.to_dict())  # --epochs may have raised the total
        console.print(f"resuming {run_dir} after epoch {state.epoch} of {recipe.epochs}")
        if trained_on != device.type:
            console.print(f"note: it was trained on {trained_on}: its random draws on the device (augmentation) "
                          f"start afresh from the seed, so from here on it will not match an uninterrupted run bit "
                          f"for bit")
    else:
        preprocess, source = (folder.preprocess, str(folder.root.resolve())) if folder else ("", "")
        info = ModelInfo(recipe.model, in_shape, train.classes, recipe.dataset,  # type: ignore[arg-type]
                         normalization=state.normalization, preprocess=preprocess, folder=source)
        try:  # epoch 0's checkpoint too: a folder that is full or unwritable fails here, before any training
            if main:
                save_run_files(run_dir, recipe, info, device, data_dir)
                plots.plot_sample(train.images[0], int(train.labels[0]), train.classes, run_dir / "sample.png")
            save_checkpoint(checkpoint, state, device, data)  # every process hands rank 0 its generators
        except OSError as error:
            raise CnnlabError(f"cannot write in {run_dir} ({error.strerror or error}); "
                              "free some space or choose another --runs-dir") from None
    if main:
        free, needed = shutil.disk_usage(run_dir).free, 2 * checkpoint.stat().st_size  # the next one, then weights
        if free < needed:
            raise CnnlabError(f"{run_dir}: {free / 1e6:.0f} MB free, the run needs about {needed / 1e6:.0f} MB "
                              "more; free some space or choose another --runs-dir")

    saved = state.epoch  # the epoch the checkpoint on disk holds

    def save(state: TrainState) -> None:
        nonlocal saved
        save_checkpoint(checkpoint, state, device, data)
        if main:
            write_history(run_dir / "history.csv", state.history)
        saved = state.epoch
        if board is not None:
            log_epoch(board, state.history[-1])

    resume_hint = f"continue with `cnnlab train --resume {run_dir}`" + (
        f" under torchrun, {distributed.world_size()} processes in all" if distributed.world_size() > 1 else "")
    try:
        history = fit(model, train, val, recipe, device, state=state, on_epoch_end=save, verbose=verbose)
        if main:
            _finish(run_dir, recipe, model, history, test, val, device, console, state.normalization)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{run_dir} holds epoch {saved} of {recipe.epochs}; {resume_hint}") from None
    except torch.cuda.OutOfMemoryError:
        raise CnnlabError(f"{device} ran out of memory with batches of {recipe.batch_size} images: lower "
                          "--batch-size, or train on --device cpu") from None
    except OSError as error:  # the disk filled up, or the folder went away, during training
        raise CnnlabError(f"cannot write in {run_dir} ({error.strerror or error}); it holds epoch {saved}: "
                          f"free some space, then {resume_hint}") from None
    except CnnlabError as error:  # the loss diverged: the last good epoch stays on disk
        raise type(error)(f"{error}; {run_dir} holds epoch {saved}") from None
    finally:
        if board is not None:
            board.close()
    return run_dir


def _finish(run_dir: Path, recipe: Recipe, model: nn.Module, history: list[EpochResult], test: ImageSet | None,
            val: ImageSet, device: torch.device, console: Console, normalization: Normalization | None) -> None:
    """The tutorial's last steps: test loss and accuracy, the weights, the figures, then metrics.json.

    A folder without test/ has no test set: its metrics are null and the predictions show validation images.
    """
    inference = Inference(model, normalization, recipe.tta, recipe.autocast)  # as the run will predict
    if test is not None:
        test_metrics = evaluate(inference, test, recipe, device)
        console.print(f"Test loss: {test_metrics['loss']:.4f} - test accuracy: {test_metrics['accuracy']:.4f}")
    else:
        test_metrics = {"loss": None, "accuracy": None}
        console.print("No test/ folder: no test accuracy; the predictions show validation images")
    save_weights(run_dir / "weights.safetensors", model)
    plots.plot_curves(history, "accuracy", run_dir / "accuracy.png")
    plots.plot_curves(history, "loss", run_dir / "loss.png")
    shown = test if test is not None else val
    picks = torch.randperm(len(shown), generator=torch.Generator().manual_seed(recipe.seed))[:3]
    guesses = predict(inference, shown.images[picks], device)
    plots.plot_predictions(shown.images[picks], shown.labels[picks].tolist(), guesses.tolist(), shown.classes,
                           run_dir / "predictions.png")
    best = max(history, key=lambda row: row.val_accuracy)
    warning = stall_warning(history, recipe, len(val.classes))
    write_json(run_dir / "metrics.json", {  # last: it marks the run finished
        "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
        "best_val_accuracy": best.val_accuracy, "best_epoch": best.epoch,
        "final_val_accuracy": history[-1].val_accuracy, "epochs": len(history),
        "train_seconds": round(sum(row.seconds for row in history), 3), "parameters": count_params(model),
        "warnings": [warning] if warning else [],
    })


def format_summary(name: str, rows, total: int) -> Table:
    """The model summary as a rich table: layer, output shape, parameters, then the total."""
    table = Table(title=f'Model: "{name}"', title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    for row in rows:
        table.add_row(f"{row.name} ({row.kind})", str((None, *row.output_shape)), f"{row.params:,}")
    table.caption = f"Total params: {total:,}"
    table.caption_justify = "left"
    return table


# ---------------------------------------------------------------------------------------------------------
# TensorBoard, optional: each epoch's numbers as scalars
# ---------------------------------------------------------------------------------------------------------
def tensorboard_writer(folder: Path):
    """A TensorBoard SummaryWriter logging into ``folder``; needs the optional ``tensorboard`` package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") from None
    return SummaryWriter(str(folder))


def log_epoch(writer, row: EpochResult) -> None:
    """history.csv's numbers for one epoch, as TensorBoard scalars, flushed so a crashed run keeps them."""
    for metric in ("loss", "accuracy"):
        writer.add_scalar(f"{metric}/train", getattr(row, metric), row.epoch)
        writer.add_scalar(f"{metric}/validation", getattr(row, f"val_{metric}"), row.epoch)
    writer.add_scalar("seconds_per_epoch", row.seconds, row.epoch)
    writer.flush()
