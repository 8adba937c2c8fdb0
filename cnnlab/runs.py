"""Run folders: everything needed to understand and reload a training run, written atomically.

A run folder holds ``recipe.json`` (the resolved recipe), ``model.json`` (what rebuilds the network and how
its input was prepared), ``weights.safetensors``, ``history.csv``, ``metrics.json``, ``environment.json``
and the tutorial's figures. Nothing in it is ever unpickled. Under torchrun rank 0 alone writes it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import distributed, fast
from .augment import Normalization
from .data import ImageSet
from .errors import CnnlabError, UsageError
from .recipes import Recipe, recipe_from_dict
from .train import EpochResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .images import ImageFolder

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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {Path(path).parent} a cnnlab run folder?") from None
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, too many digits, nested too deep
        raise CnnlabError(f"{path}: not valid JSON ({error}); the run folder is damaged") from None


def write_history(path: Path, history: list[EpochResult]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for row in history:
        writer.writerow([row.epoch] + [f"{getattr(row, k):.6g}" for k in HISTORY_FIELDS[1:]])
    atomic_write(path, out.getvalue())


def read_history(path: Path) -> list[EpochResult]:
    try:
        with open(path, newline="") as f:
            return [EpochResult(int(r["epoch"]), *(float(r[k]) for k in HISTORY_FIELDS[1:]))
                    for r in csv.DictReader(f)]
    except (KeyError, TypeError, ValueError, csv.Error) as error:  # ValueError: bad numbers, bad UTF-8
        raise CnnlabError(f"{path}: malformed ({error!r}); the run folder is damaged") from None


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


# ---------------------------------------------------------------------------------------------------------
# Weights: safetensors, checked on the way in
# ---------------------------------------------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"format": RUN_FORMAT}))


def load_weights(path: Path, model: nn.Module) -> nn.Module:
    """Load ``path`` into ``model`` (which may be built on the meta device: it then takes the file's tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; the run has no weights (did training finish?)") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise CnnlabError(f"{path}: not a readable safetensors file ({error}); the run folder is damaged") from None
    check_tensors(path, tensors, model.state_dict(), "the run folder is damaged or from another model")
    model.load_state_dict(tensors, assign=True)
    return model


def check_tensors(source: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  fix: str) -> None:
    """Refuse missing or extra keys, other shapes or dtypes than ``expected``'s, and NaN or infinite values."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        what = [f"{name} {keys[:3]}" for name, keys in (("missing", missing), ("unexpected", extra)) if keys]
        raise CnnlabError(f"{source}: tensors {' and '.join(what)}; {fix}")
    for key, tensor in tensors.items():
        want = expected[key]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise CnnlabError(f"{source}: {key!r} is {tensor.dtype} {tuple(tensor.shape)}, where "
                              f"{want.dtype} {tuple(want.shape)} is needed; {fix}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CnnlabError(f"{source}: {key!r} holds NaN or infinite values; {fix}")


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
        check_writable(run_dir)
    except OSError as error:
        raise CnnlabError(f"cannot write runs under {runs_dir} ({error.strerror or error}); "
                          "choose another folder with --runs-dir") from None
    return run_dir


def check_writable(folder: Path) -> None:
    """Raise OSError unless a file can be written in ``folder``."""
    probe = folder / ".write-test"
    probe.write_bytes(b"ok")
    probe.unlink()


def environment(device: torch.device) -> dict[str, Any]:
    import numpy
    import safetensors

    from . import __version__

    info = {"cnnlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "safetensors": safetensors.__version__,
            "platform": platform.platform(), "device": str(device), "cpu_threads": torch.get_num_threads(),
            "world_size": distributed.world_size(), "backend": distributed.backend(),  # processes training the run
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
    preprocess: str = ""  # how an image file becomes the input: a key of cnnlab.images.PREPROCESS; "": the data set's
    folder: str = ""  # dataset 'folder': the folder trained on, where `evaluate` looks for test/

    def __post_init__(self) -> None:
        from .images import default_preprocess

        self.preprocess = self.preprocess or default_preprocess(self.dataset)

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> "ModelInfo":
        from .images import PREPROCESS
        from .models import MODELS

        if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
            raise CnnlabError(f"{source}: not a {RUN_FORMAT!r} file; was it written by another version of cnnlab?")
        model, in_shape, classes, dataset = (data.get(k) for k in ("model", "in_shape", "classes", "dataset"))
        preprocess, folder = data.get("preprocess", ""), data.get("folder", "")
        stats = data.get("normalization")
        try:
            normalization = None if stats is None else Normalization(
                tuple(float(v) for v in stats["mean"]), tuple(float(v) for v in stats["std"]))
        except (KeyError, TypeError, ValueError):
            raise CnnlabError(f"{source}: malformed normalization; the run folder is damaged") from None
        if not (isinstance(model, str) and model in MODELS and isinstance(dataset, str)
                and isinstance(in_shape, list) and len(in_shape) == 3
                and all(type(v) is int and 0 < v <= 2**16 for v in in_shape) and isinstance(classes, list)
                and 0 < len(classes) <= 2**16 and all(isinstance(c, str) for c in classes)
                and isinstance(folder, str) and isinstance(preprocess, str)):
            raise CnnlabError(f"{source}: a field is missing or malformed (model, in_shape, classes, dataset, "
                              "preprocess or folder); the run folder is damaged")
        if preprocess not in ("", *PREPROCESS):
            raise CnnlabError(f"{source}: unknown preprocessing {preprocess!r}; was it written by a newer cnnlab?")
        return cls(model, tuple(in_shape), tuple(classes), dataset,  # type: ignore[arg-type]
                   normalization=normalization, preprocess=preprocess, folder=folder)


@dataclass
class Run:
    """A run folder, loaded: its recipe, its rebuilt model with weights, and what it recorded."""

    run_dir: Path
    recipe: Recipe
    info: ModelInfo
    model: nn.Module
    history: list[EpochResult]
    metrics: dict[str, Any]

    def _repr_html_(self) -> str:  # Jupyter
        from .display import run_html

        return run_html(self)


def save_run_files(run_dir: Path, recipe: Recipe, info: ModelInfo, device: torch.device,
                   data_dir: str | os.PathLike | None = None) -> None:
    write_json(run_dir / "recipe.json", recipe.to_dict())
    write_json(run_dir / "model.json", asdict(info))
    write_json(run_dir / "environment.json", {
        **environment(device), "seed": recipe.seed, "deterministic": recipe.deterministic,
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),  # where a resumed run looks
    })


def read_recipe(path: Path) -> Recipe:
    try:
        return recipe_from_dict(read_json(path))
    except UsageError as error:  # a bad field here is a damaged file, not a bad command
        raise CnnlabError(f"{path}: {error}; the run folder is damaged") from None


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild a run's model from its folder (JSON and safetensors only) and read what it recorded."""
    from .checkpoint import CHECKPOINT
    from .models import create_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = read_recipe(run_dir / "recipe.json")
    info = ModelInfo.from_dict(read_json(run_dir / "model.json"), run_dir / "model.json")
    # On the meta device, shapes without memory: nothing large is allocated, whatever model.json says.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an absurd in_shape makes empty layers that warn; the check below speaks
        model = create_model(info.model, info.in_shape, len(info.classes))
        try:
            model.eval()(torch.zeros(1, *info.in_shape))  # eval: BatchNorm takes a batch of one
        except (RuntimeError, ValueError) as error:
            raise CnnlabError(f"{run_dir / 'model.json'}: {info.model} cannot take images of shape "
                              f"{info.in_shape} ({error}); the run folder is damaged") from None
    if not (run_dir / "weights.safetensors").exists() and (run_dir / CHECKPOINT).exists():
        raise CnnlabError(f"{run_dir}: training has not finished; continue it with `cnnlab train --resume {run_dir}`")
    model = load_weights(run_dir / "weights.safetensors", model)
    model.eval()
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    return Run(run_dir, recipe, info, model, history, metrics)


def load_test_set(info: ModelInfo, data_dir: str | os.PathLike | None = None) -> ImageSet:
    """The test images of a run's data set; for a folder run, its test/ part (``data_dir`` if it has moved)."""
    from .data import load_test_images
    from .images import load_folder

    if info.dataset != "folder":
        return load_test_images(info.dataset, data_dir)
    root = Path(data_dir or info.folder)
    test = load_folder(root, info.in_shape, info.preprocess, classes=info.classes, parts=("test",)).test
    if test is None:
        raise CnnlabError(f"{root}: has no test/ folder, so this run has no test set; put images in "
                          f"{root / 'test'}/CLASS/ to evaluate, or predict single files with `cnnlab predict`")
    return test


# ---------------------------------------------------------------------------------------------------------
# A recipe, start to finish: the tutorial's steps 1–11 into one run folder
# ---------------------------------------------------------------------------------------------------------
def train_recipe(recipe: Recipe, data_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 verbose: bool = True, folder: "ImageFolder | None" = None, tensorboard: bool = False) -> Path:
    """Load and split the data, build the model, fit, evaluate on the test set, save everything; the run folder.

    ``folder`` (from ``cnnlab.images.load_folder``) replaces the recipe's data set: its own val/ replaces the
    split, and without a test/ there is no test evaluation. ``tensorboard`` also logs each epoch under
    ``RUN_DIR/tensorboard/``. Under torchrun every process trains the run, rank 0 writes it (cnnlab.distributed).
    """
    from .train import resolve_device

    recipe = recipe.resolved()
    device = resolve_device(recipe.device)
    if (recipe.dataset == "folder") != (folder is not None):
        raise CnnlabError(f"recipe {recipe.name!r} trains on {recipe.dataset!r}; a folder of your own images "
                          "goes with --data FOLDER (and dataset 'folder')")
    with distributed.process_group(recipe, device) as device:
        # Before the data: an unwritable folder fails fast. Rank 0 makes it and tells the others its name.
        run_dir = distributed.broadcast(new_run_dir(runs_dir, recipe.name) if distributed.is_main() else None)
        board = tensorboard_writer(run_dir / "tensorboard") if tensorboard and distributed.is_main() else None
        return _train_into(run_dir, recipe, device, data_dir, verbose, resume=False, folder=folder, board=board)


def resume_run(run_dir: str | os.PathLike, epochs: int | str | None = None,
               data_dir: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Continue a run from its last checkpoint to the end of its recipe, or to ``epochs`` epochs in all.

    The recipe and the data's folder come from the run folder; the history and weights come out as an
    uninterrupted run on the same device would have given them. A run trained under torchrun resumes under
    torchrun, with as many processes: each reads the checkpoint and takes its own random generators.
    """
    from .recipes import with_overrides
    from .train import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = read_recipe(run_dir / "recipe.json")
    if epochs is not None:
        recipe = with_overrides(recipe, {"epochs": epochs})
    if data_dir is None:
        recorded = read_json(run_dir / "environment.json")
        data_dir = recorded.get("data_dir") if isinstance(recorded, dict) else None
    try:
        if distributed.is_main():
            check_writable(run_dir)
    except OSError as error:
        raise CnnlabError(f"cannot write to {run_dir} ({error.strerror or error}); make it writable") from None
    folder = None
    if recipe.dataset == "folder":  # the same images, prepared the same way, in the same class order
        from .images import load_folder

        info = ModelInfo.from_dict(read_json(run_dir / "model.json"), run_dir / "model.json")
        folder = load_folder(info.folder, info.in_shape, info.preprocess, classes=info.classes)
    with distributed.process_group(recipe, resolve_device(recipe.device)) as device:
        return _train_into(run_dir, recipe, device, data_dir, verbose, resume=True, folder=folder)


def _train_into(run_dir: Path, recipe: Recipe, device: torch.device, data_dir: str | os.PathLike | None,
                verbose: bool, resume: bool, folder: "ImageFolder | None" = None, board=None) -> Path:
    from rich.console import Console

    from . import plots
    from .checkpoint import CHECKPOINT, data_fingerprint, load_checkpoint, save_checkpoint
    from .data import load_dataset, split
    from .models import count_params, create_model, summarize
    from .train import TrainState, fit, start_state

    main = distributed.is_main()  # the process that prints and writes; the others train beside it
    console = Console(quiet=not (verbose and main), highlight=False, soft_wrap=True)
    if folder is None:
        (train_all, test), val = load_dataset(recipe.dataset, data_dir), None
    else:
        train_all, val, test = folder.train, folder.val, folder.test
    train, val = split(train_all, recipe.val_fraction, recipe.split_seed) if val is None else (train_all, val)
    console.print(f"{recipe.name}: {folder.root if folder else recipe.dataset} — {len(train):,} train / "
                  f"{len(val):,} validation / {f'{len(test):,}' if test is not None else 'no'} test images, "
                  f"on {device}")
    if note := fast.precision_note(device, recipe.autocast):
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
            console.print(f"note: it was trained on {trained_on}: from here on it will not match an "
                          f"uninterrupted run bit for bit")
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
            val: ImageSet, device: torch.device, console: "Console", normalization: Normalization | None) -> None:
    """The tutorial's last steps: test loss and accuracy, the weights, the figures, then metrics.json.

    A folder without test/ has no test set: its metrics are null and the predictions show validation images.
    """
    from . import plots
    from .models import count_params
    from .predict import predict
    from .train import autocast, evaluate

    if test is not None:
        test_metrics = evaluate(model, test, recipe, device, normalization=normalization)
        console.print(f"Test loss: {test_metrics['loss']:.4f} - test accuracy: {test_metrics['accuracy']:.4f}")
    else:
        test_metrics = {"loss": None, "accuracy": None}
        console.print("No test/ folder: no test accuracy; the predictions show validation images")
    save_weights(run_dir / "weights.safetensors", model)
    plots.plot_curves(history, "accuracy", run_dir / "accuracy.png")
    plots.plot_curves(history, "loss", run_dir / "loss.png")
    shown = test if test is not None else val
    picks = torch.randperm(len(shown), generator=torch.Generator().manual_seed(recipe.seed))[:3]
    with autocast(device, recipe):  # as evaluate computed the test accuracy
        guesses = predict(model, shown.images[picks], device, normalization, recipe.tta)
    plots.plot_predictions(shown.images[picks], shown.labels[picks].tolist(), guesses.tolist(), shown.classes,
                           run_dir / "predictions.png")
    best = max(history, key=lambda row: row.val_accuracy)
    write_json(run_dir / "metrics.json", {  # last: it marks the run finished
        "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
        "best_val_accuracy": best.val_accuracy, "best_epoch": best.epoch,
        "final_val_accuracy": history[-1].val_accuracy, "epochs": len(history),
        "train_seconds": round(sum(row.seconds for row in history), 3), "parameters": count_params(model),
    })


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
