"""Training a run: a recipe, start to finish, into a run folder — the tutorial's steps 1–11.

Load and split the data, build the model, fit it (``cnnlab.loop``), checkpoint every epoch
(``cnnlab.checkpoint``), then evaluate on the test set and write the weights, figures and metrics — every
file through ``cnnlab.runs.Run``, which holds the folder's format. One process trains a run folder at a
time; under torchrun every process trains and rank 0 writes.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from . import distributed, engines, plots
from .augment import Normalization, check_translate
from .checkpoint import load_checkpoint, save_checkpoint
from .data import ImageSet, data_fingerprint, load_dataset, split
from .device import precision_note, resolve_device
from .display import plain_console
from .errors import CnnlabError, UsageError, hint
from .files import check_writable, locked
from .history import EpochResult, history_csv
from .images import ImageFolder, load_folder
from .inference import Inference, evaluate
from .loop import TrainState, fit, stall_warning, start_state
from .models import Summary, count_params, create_model, head_name, summarize
from .prediction import predict
from .recipes import FOLDER_RECIPE, Recipe, as_recipe, for_data, with_overrides
from .runs import CHECKPOINT, ModelInfo, Run, data_location, new_run_dir
from .transfer import adopt, check_shape, record, resumed_start, source_run, take_layers


# ---------------------------------------------------------------------------------------------------------
# A recipe, start to finish: the tutorial's steps 1–11 into one run folder
# ---------------------------------------------------------------------------------------------------------
def train_recipe(recipe: Recipe | str, data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 verbose: bool = True, folder: ImageFolder | None = None, tensorboard: bool = False,
                 from_run: Run | str | os.PathLike | None = None) -> Path:
    """Load and split the data, build the model, fit, evaluate on the test set, save everything; the run folder.

    ``folder`` (from ``cnnlab.images.load_folder``; ``train_folder`` loads it for you) replaces the recipe's
    data set: its own val/ replaces the split, and without a test/ there is no test evaluation. ``tensorboard``
    also logs each epoch under ``RUN_DIR/tensorboard/``. ``from_run`` (a finished run folder) starts the
    network from that run's trained layers, all but the head (cnnlab.transfer); its model and normalisation
    replace the recipe's. Under torchrun every process trains the run, rank 0 writes it (cnnlab.distributed).
    A training refused before its first checkpoint leaves no folder behind. ``recipe`` may be a name.
    """
    recipe = as_recipe(recipe)
    if (recipe.dataset == "folder") != (folder is not None):
        raise CnnlabError(f"recipe {recipe.name!r} trains on {recipe.dataset!r}; a folder of your own images "
                          + hint(cli="goes with --data FOLDER (and dataset 'folder')",
                                 python="is trained with cnnlab.train_folder(FOLDER, recipe)"))
    source = source_run(from_run) if from_run is not None else None
    recipe, note = adopt(recipe, source) if source is not None else (recipe, None)
    recipe = recipe.resolved()
    device = resolve_device(recipe.device)
    recipe = engines.for_device(recipe, device, distributed.world_size())  # 'auto' decided; recipe.json records it
    if folder is not None:
        _check_classes(folder)
    with distributed.process_group(recipe, device) as device:
        # Before the data: an unwritable folder fails fast. Rank 0 makes it and tells the others its name.
        run_dir = distributed.broadcast(new_run_dir(runs_dir, recipe.name) if distributed.is_main() else None)
        assert run_dir is not None
        run = Run(run_dir)
        with _lock(run.run_dir), _removed_unless_resumable(run):
            return _train_into(run, recipe, device, data_dir, verbose, resume=False, folder=folder,
                               tensorboard=tensorboard, source=source, note=note)


def train_folder(folder: str | os.PathLike, recipe: Recipe | str | None = None, *,
                 size: int | Sequence[int] | None = None, channels: int | None = None, preprocess: str | None = None,
                 strict: bool = False, runs_dir: str | os.PathLike = "runs", verbose: bool = True,
                 tensorboard: bool = False, from_run: Run | str | os.PathLike | None = None) -> Path:
    """Train on your own images, as ``cnnlab train --data FOLDER`` does; the run folder.

    ``folder`` holds one sub-folder of images per class, optionally inside train/, val/ and test/. ``recipe``
    (default: ``FOLDER_RECIPE``, a CNN with dropout and Adam) gets dataset 'folder'. ``size`` (N, or (height,
    width)) and ``channels`` (1 or 3) fix the images' shape, else the most common in the folder; ``preprocess``
    is 'crop', 'digit' or 'grey-fit' (``cnnlab.images.PREPROCESS``; default: the recipe's, else 'crop');
    ``strict`` stops at an unreadable image instead of skipping it. ``from_run`` (a finished run folder or
    ``Run``) starts from that run's trained layers, all but the head, which is made new for the folder's
    classes; the images are then made as that run's were (its shape and preprocessing).
    """
    recipe = FOLDER_RECIPE if recipe is None else as_recipe(recipe)
    shape = _folder_shape(size, channels)
    source = source_run(from_run) if from_run is not None else None
    if source is not None:  # the images are made as RUN's were: its layers know no other input
        flags = hint(cli="leave out --size, --channels and --preprocess", python="leave out size, channels and "
                                                                                   "preprocess")
        check_shape(source, shape, f"{flags} (the images are made as the run's were)")
        if preprocess not in (None, source.info.preprocess):
            raise CnnlabError(f"{hint(cli='--from', python='from_run')} {source.run_dir}: its images were prepared "
                              f"by {source.info.preprocess!r}, not {preprocess!r}; {flags}")
        shape, preprocess = source.info.in_shape, source.info.preprocess
    preprocess = preprocess or recipe.preprocess or "crop"
    recipe = with_overrides(recipe, {"dataset": "folder", "preprocess": preprocess})
    images = load_folder(folder, shape, preprocess, strict=strict)
    return train_recipe(recipe, runs_dir=runs_dir, verbose=verbose, folder=images, tensorboard=tensorboard,
                        from_run=source)


def _folder_shape(size: object, channels: object) -> tuple[int | None, ...]:
    """(channels, height, width) from ``train_folder``'s ``size`` and ``channels``, None where the folder decides;
    checked as the CLI's --size and --channels are, so a bad one is one line, not an error inside PyTorch."""
    def whole(value: object, least: int) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= least

    sides = (size, size) if whole(size, 2) else tuple(size) if isinstance(size, (tuple, list)) else (None, None)
    if size is not None and not (len(sides) == 2 and all(whole(side, 2) for side in sides)):
        raise CnnlabError(f"size={size!r}: pass the side in pixels (2 or more), or (height, width)")
    if channels is not None and not (whole(channels, 1) and channels in (1, 3)):
        raise CnnlabError(f"channels={channels!r}: pass 1 (grey) or 3 (colour), or leave it out")
    whole_sides = (None if side is None else int(cast(int, side)) for side in sides)
    return (None if channels is None else int(cast(int, channels)), *whole_sides)


def resume_run(run: Run | str | os.PathLike, epochs: int | str | None = None,
               data_dir: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Continue a run from its last checkpoint to the end of its recipe, or to ``epochs`` epochs in all.

    The recipe and the data's folder come from the run folder; the history and weights come out as an
    uninterrupted run on the same device would have given them. A run trained under torchrun resumes under
    torchrun, with as many processes: each reads the checkpoint and takes its own random generators.
    Whatever there is left to train, history.csv and metrics.json end agreeing with the checkpoint.
    """
    run = run if isinstance(run, Run) else Run(run)
    if not run.run_dir.is_dir():
        raise CnnlabError(f"{run.run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = run.recipe
    if epochs is not None:
        recipe = with_overrides(recipe, {"epochs": epochs})
    with _lock(run.run_dir):  # before anything is written: a second process on this run stops here
        if distributed.is_main():
            try:
                check_writable(run.run_dir)
            except OSError as error:
                raise CnnlabError(f"cannot write to {run.run_dir} ({error.strerror or error}); make it writable") \
                    from None
            run.remove_stale_temp()  # what killed writes left
        folder, data_dir = None, data_location(run, data_dir)
        if recipe.dataset == "folder":  # the same images, prepared the same way, in the same class order
            assert data_dir is not None  # data_location names a folder run's images, or refuses
            folder = load_folder(data_dir, run.info.in_shape, run.info.preprocess, classes=run.info.classes)
        with distributed.process_group(recipe, resolve_device(recipe.device)) as device:
            return _train_into(run, recipe, device, data_dir, verbose, resume=True, folder=folder)


def _lock(run_dir: Path) -> contextlib.AbstractContextManager:
    """One process trains a run folder at a time; under torchrun rank 0 holds the lock for all of them."""
    return locked(run_dir) if distributed.is_main() else contextlib.nullcontext()


@contextlib.contextmanager
def _removed_unless_resumable(run: Run) -> Iterator[None]:
    """A new run refused or stopped before its first checkpoint is removed: nothing in it could be resumed."""
    try:
        yield
    except BaseException:
        if distributed.is_main() and not run.has(CHECKPOINT):
            shutil.rmtree(run.run_dir, ignore_errors=True)
        raise


def _check_classes(folder: ImageFolder) -> None:
    """Every class needs training images: a class with none could never be predicted."""
    assert folder.train is not None
    counts = torch.bincount(folder.train.labels, minlength=len(folder.train.classes)).tolist()
    empty = [name for name, count in zip(folder.train.classes, counts) if count == 0]
    if empty:
        raise CnnlabError(f"{folder.root}: class{'es' * (len(empty) > 1)} {', '.join(map(repr, empty))} "
                          f"{'have' if len(empty) > 1 else 'has'} no readable training images; add some, or "
                          "remove the class's folder")


# ---------------------------------------------------------------------------------------------------------
# Into one run folder: the data, the model and its state (fresh or from the checkpoint), then fit and finish
# ---------------------------------------------------------------------------------------------------------
def _train_into(run: Run, recipe: Recipe, device: torch.device, data_dir: str | os.PathLike | None,
                verbose: bool, resume: bool, folder: ImageFolder | None = None, tensorboard: bool = False,
                source: Run | None = None, note: str | None = None) -> Path:
    main = distributed.is_main()  # the process that prints and writes; the others train beside it
    console = plain_console(quiet=not (verbose and main), highlight=False, soft_wrap=True)
    train, val, test = _load_data(recipe, data_dir, folder, device, console)
    # Before recipe.json is written: a resumed run reads the batch and rate it began with
    recipe, fitted = for_data(recipe, len(train), distributed.world_size())
    if fitted:
        console.print(f"note: {fitted}")

    channels, height, width = train.images.shape[1:]
    in_shape = (channels, height, width)
    if source is not None:
        check_shape(source, in_shape, "start from a run trained on images of the data's shape")
    check_translate(recipe.translate, in_shape)  # before the run folder is written: fit checks again, too late for it
    torch.manual_seed(recipe.seed)  # the initial weights, then dropout
    model = create_model(recipe.model, in_shape, len(train.classes))
    start = take_layers(model, source) if source is not None else \
        resumed_start(run.info, model, str(run.path("model.json"))) if resume else None
    if not resume:
        console.print(format_summary(recipe.model, summarize(model, in_shape), count_params(model)))
        if start is not None and source is not None:
            console.print(f"Started from {source.run_dir}: {', '.join(start.layers)} taken, "
                          f"{head_name(model)} new for {len(train.classes)} classes"
                          + (f", frozen for {recipe.freeze_epochs} epoch{'s' * (recipe.freeze_epochs > 1)}"
                             if recipe.freeze_epochs else ""))
        if note:
            console.print(f"note: {note}")
    # On the device first: a checkpoint's moments load beside it
    state = start_state(model, recipe, train, device, start)
    data = data_fingerprint(train, val)
    if resume:
        if not _resume_state(run, recipe, state, device, data, console):
            return run.run_dir  # nothing to train, and the files agree with the checkpoint again
    else:
        info = ModelInfo(recipe.model, in_shape, train.classes, recipe.dataset,
                         normalization=state.normalization, preprocess=folder.preprocess if folder else "",
                         started_from=record(source, start) if source is not None and start is not None else None)
        _begin(run, recipe, info, state, device, data, folder.root if folder else data_dir, train)
    if main:
        free, needed = shutil.disk_usage(run.run_dir).free, 2 * run.path(CHECKPOINT).stat().st_size  # next, weights
        if free < needed:
            raise CnnlabError(f"{run.run_dir}: {free / 1e6:.0f} MB free, the run needs about {needed / 1e6:.0f} MB "
                              f"more; free some space or choose another {hint(cli='--runs-dir', python='runs_dir')}")
    board = tensorboard_writer(run.path("tensorboard")) if tensorboard and main else None
    _fit_and_finish(run, recipe, model, (train, val, test), state, device, data, console, verbose, board)
    return run.run_dir


def _load_data(recipe: Recipe, data_dir: str | os.PathLike | None, folder: ImageFolder | None,
               device: torch.device, console: Console) -> tuple[ImageSet, ImageSet, ImageSet | None]:
    """The training, validation and test sets: the recipe's data set split as it says, or the folder's parts."""
    test: ImageSet | None
    if folder is None:
        (train_all, test), val = load_dataset(recipe.dataset, data_dir), None
    else:
        assert folder.train is not None  # load_folder loads train/ always
        train_all, val, test = folder.train, folder.val, folder.test
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed) if val is None else (train_all, val)
    del train_all  # split copied its images: 47 MB for Fashion-MNIST that training would hold for nothing
    console.print(f"{recipe.name}: {folder.root if folder else recipe.dataset} — {len(train):,} train / "
                  f"{len(val):,} validation / {f'{len(test):,}' if test is not None else 'no'} test images, "
                  f"on {device}{f' ({recipe.autocast} autocast)' if recipe.autocast != 'off' else ''}")
    notes = (precision_note(device, recipe.autocast), engines.engine_note(device, recipe, distributed.world_size()))
    for note in notes:
        if note:
            console.print(f"note: {note}")
    return train, val, test


def _begin(run: Run, recipe: Recipe, info: ModelInfo, state: TrainState, device: torch.device, data: str,
           source: str | os.PathLike | None, train: ImageSet) -> None:
    """A new run's first files and epoch 0's checkpoint: a folder that is full or unwritable fails here,
    before any training."""
    try:
        if distributed.is_main():
            run.begin(recipe, info, device, source)
            plots.plot_sample(train.images[0], int(train.labels[0]), train.classes, run.figure("sample.png"))
        save_checkpoint(run.path(CHECKPOINT), state, device, data)  # every process hands rank 0 its generators
    except OSError as error:
        raise CnnlabError(f"cannot write in {run.run_dir} ({error.strerror or error}); "
                          f"free some space or choose another {hint(cli='--runs-dir', python='runs_dir')}") from None


def _resume_state(run: Run, recipe: Recipe, state: TrainState, device: torch.device, data: str,
                  console: Console) -> bool:
    """Load the checkpoint into ``state`` and make history.csv (and metrics.json, for a finished run) agree with
    it: a kill between the checkpoint and history.csv leaves them apart. Whether there is training left."""
    main = distributed.is_main()
    trained_on = load_checkpoint(run.path(CHECKPOINT), state, device, data)
    history_agrees = run.has("history.csv") and _same_bytes(run, "history.csv", history_csv(state.history))
    metrics = _readable_metrics(run)
    if state.epoch > recipe.epochs or state.epoch == recipe.epochs and metrics is not None:
        stale = {key: value for key, value in history_metrics(state.history).items() if metrics.get(key) != value} \
            if metrics is not None else {}
        if history_agrees and not stale:
            raise UsageError(f"{run.run_dir} has trained {state.epoch} epochs already; "
                             f"pass --epochs N, more than {state.epoch}, to train further")
        if main:
            run.write_history(state.history)
            if metrics is not None and stale:
                run.write_metrics({**metrics, **stale})
        console.print(f"{run.run_dir}: history.csv{' and metrics.json' if stale else ''} rewritten from its "
                      f"checkpoint ({state.epoch} epochs); pass --epochs N, more than {state.epoch}, to train further")
        return False
    if main:
        run.write_recipe(recipe)  # --epochs may have raised the total
        if not history_agrees:
            run.write_history(state.history)
    console.print(f"resuming {run.run_dir} after epoch {state.epoch} of {recipe.epochs}")
    if trained_on != device.type:
        console.print(f"note: it was trained on {trained_on}: its random draws on the device (augmentation) "
                      f"start afresh from the seed, so from here on it will not match an uninterrupted run bit "
                      f"for bit")
    return True


def _same_bytes(run: Run, name: str, text: str) -> bool:
    try:
        return run.read_bytes(name) == text.encode()
    except CnnlabError:
        return False


def _readable_metrics(run: Run) -> dict | None:
    """metrics.json, or None where it is missing or damaged (finishing the run writes it anew)."""
    try:
        return run.metrics if run.has("metrics.json") else None
    except CnnlabError:
        return None


def _fit_and_finish(run: Run, recipe: Recipe, model: nn.Module, sets: tuple[ImageSet, ImageSet, ImageSet | None],
                    state: TrainState, device: torch.device, data: str, console: Console, verbose: bool,
                    board) -> None:
    """Fit from ``state``, a checkpoint and a history.csv row after every epoch, then finish the run."""
    main = distributed.is_main()
    train, val, test = sets
    saved = state.epoch  # the epoch the checkpoint on disk holds

    def save(state: TrainState) -> None:
        nonlocal saved
        save_checkpoint(run.path(CHECKPOINT), state, device, data)
        saved = state.epoch  # before history.csv: a Ctrl-C while it is written leaves this epoch on disk
        if main:
            run.write_history(state.history)
        if board is not None:
            log_epoch(board, state.history[-1])

    resume_hint = "continue with " + hint(cli=f"`cnnlab train --resume {run.run_dir}`",
                                          python=f"cnnlab.resume_run({str(run.run_dir)!r})") + (
        f" under torchrun, {distributed.world_size()} processes in all" if distributed.world_size() > 1 else "")
    try:
        history = fit(model, train, val, recipe, device, state=state, on_epoch_end=save, verbose=verbose)
        if main:
            _finish(run, recipe, model, history, test, val, device, console, state.normalization)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{run.run_dir} holds epoch {saved} of {recipe.epochs}; {resume_hint}") from None
    except BrokenPipeError:  # `cnnlab train … | head`: stop, as Unix tools do, but say where the run stands
        raise CnnlabError(f"the program reading the output went away, so training stopped; {run.run_dir} holds "
                          f"epoch {saved} of {recipe.epochs}; {resume_hint}") from None
    except torch.cuda.OutOfMemoryError:
        raise CnnlabError(f"{device} ran out of memory with batches of {recipe.batch_size} images: lower "
                          "--batch-size, or train on --device cpu") from None
    except OSError as error:  # the disk filled up, or the folder went away, during training
        raise CnnlabError(f"cannot write in {run.run_dir} ({error.strerror or error}); it holds epoch {saved}: "
                          f"free some space, then {resume_hint}") from None
    except CnnlabError as error:  # the loss diverged: the last good epoch stays on disk
        raise type(error)(f"{error}; {run.run_dir} holds epoch {saved}") from None
    finally:
        if board is not None:
            board.close()


def history_metrics(history: list[EpochResult]) -> dict[str, float | int]:
    """What metrics.json says of the epochs: the best validation accuracy and its epoch, the last, the count,
    the training time."""
    best = max(history, key=lambda row: row.val_accuracy)
    return {"best_val_accuracy": best.val_accuracy, "best_epoch": best.epoch,
            "final_val_accuracy": history[-1].val_accuracy, "epochs": len(history),
            "train_seconds": round(sum(row.seconds for row in history), 3)}


def _finish(run: Run | Path, recipe: Recipe, model: nn.Module, history: list[EpochResult], test: ImageSet | None,
            val: ImageSet, device: torch.device, console: Console, normalization: Normalization | None) -> None:
    """The tutorial's last steps: test loss and accuracy, the weights, the figures, then metrics.json.

    A folder without test/ has no test set: its metrics are null and the predictions show validation images.
    """
    run = run if isinstance(run, Run) else Run(run)
    inference = Inference(model, normalization, recipe.tta, recipe.autocast)  # as the run will predict
    test_metrics: Mapping[str, float | None]
    if test is not None:
        test_metrics = evaluate(inference, test, recipe, device)._asdict()
        console.print(f"Test loss: {test_metrics['loss']:.4f} - test accuracy: {test_metrics['accuracy']:.4f}")
    else:
        test_metrics = {"loss": None, "accuracy": None}
        console.print("No test/ folder: no test accuracy; the predictions show validation images")
    run.save_weights(model)
    plots.plot_curves(history, "accuracy", run.figure("accuracy.png"))
    plots.plot_curves(history, "loss", run.figure("loss.png"))
    shown = test if test is not None else val
    picks = torch.randperm(len(shown), generator=torch.Generator().manual_seed(recipe.seed))[:3]
    guesses = predict(inference, shown.images[picks], device)
    plots.plot_predictions(shown.images[picks], shown.labels[picks].tolist(), guesses.tolist(), shown.classes,
                           run.figure("predictions.png"))
    warning = stall_warning(history, recipe, len(val.classes))
    run.write_metrics({  # last: it marks the run finished
        "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"], **history_metrics(history),
        "parameters": count_params(model), "warnings": [warning] if warning else [],
        "test_data": data_fingerprint(test) if test is not None else None,  # evaluate says when it is given others
    })


def format_summary(name: str, rows: Summary, total: int) -> Table:
    """The model summary as a rich table: layer, output shape, parameters, then the total."""
    table = Table(title=f'Model: "{name}"', title_justify="left")
    for header in rows.HEADER:
        table.add_column(header, justify="right" if header == "Param #" else "left")
    for row in rows:
        table.add_row(*row.cells())
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
