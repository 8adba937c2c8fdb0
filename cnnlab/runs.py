"""Run folders: the one place their files are written and read. Everything needed to understand and reload a run.

A run folder holds ``recipe.json`` (the resolved recipe), ``model.json`` (what rebuilds the network and how
its input was prepared), ``environment.json`` (versions, device, date, where the data came from),
``weights.safetensors``, ``history.csv``, ``metrics.json`` and the tutorial's figures; while it trains,
``checkpoint.safetensors`` too (written by ``cnnlab.checkpoint``); after ``cnnlab evaluate``, ``evaluation/``.
``Run`` reads each file when first asked for — the weights too — and checks it on the way in; nothing is
ever unpickled, and nothing is read from outside the folder or from anything but a regular file of a bounded
size. PyTorch is imported only by what handles tensors, so listing runs needs none.
"""
from __future__ import annotations

import csv
import io
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError, DataMissing, UsageError, hint, warn
from .files import (
    DAMAGED,
    MAX_READ,
    atomic_write,
    check_regular,
    check_writable,
    lock_owner,
    make_folder,
    read_bytes,
    read_json,
    remove_stale_temp,
    write_json,
)
from .history import EpochResult, read_history, write_history
from .recipes import MODEL_NAMES, PREPROCESS_NAMES, Recipe, recipe_from_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .augment import Normalization
    from .data import ImageSet

RUN_FORMAT = "cnnlab-run/1"
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.safetensors"  # the last finished epoch's full state (cnnlab.checkpoint)
FIGURES = ("sample.png", "accuracy.png", "loss.png", "predictions.png")  # the tutorial's, written by training
EVALUATION = "evaluation"  # cnnlab evaluate's folder inside the run (cnnlab.evaluation)
FILES = ("recipe.json", "model.json", "environment.json", "history.csv", "metrics.json", WEIGHTS, CHECKPOINT,
         *FIGURES, "report.html")
MAX_WEIGHTS = 2**34  # bytes, 16 GiB: far past any network cnnlab builds; safetensors maps the file, never reads it all


# ---------------------------------------------------------------------------------------------------------
# Weights: safetensors, checked on the way in
# ---------------------------------------------------------------------------------------------------------
def save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"format": RUN_FORMAT}))


def load_weights(path: Path, model: nn.Module, within: Path | None = None) -> nn.Module:
    """Load ``path`` into ``model`` (which may be built on the meta device: it then takes the file's tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        check_regular(path, within, MAX_WEIGHTS)
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; the run has no weights (did training finish?)") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise CnnlabError(f"{path}: not a readable safetensors file ({error}); {DAMAGED}") from None
    check_tensors(path, tensors, model.state_dict(), f"{DAMAGED} or from another model")
    model.load_state_dict(tensors, assign=True)
    return model


def check_tensors(source: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  fix: str) -> None:
    """Refuse missing or extra keys, other shapes or dtypes than ``expected``'s, and NaN or infinite values."""
    import torch

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
# model.json: what rebuilds the network and prepares its input
# ---------------------------------------------------------------------------------------------------------
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
    # {"run": name, "path": folder, "layers": [module names]}: the run whose trained layers this one started from
    # (`cnnlab train --from RUN`; cnnlab.transfer); None: it started from fresh weights
    started_from: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from .images import default_preprocess

        self.preprocess = self.preprocess or default_preprocess(self.dataset)

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> ModelInfo:
        from .augment import Normalization

        model, in_shape, classes, dataset, preprocess, stats, started_from = _model_fields(data, source)
        return cls(model, in_shape, classes, dataset, normalization=None if stats is None else Normalization(*stats),
                   preprocess=preprocess, started_from=started_from)


def _model_fields(data: Any, source: Path) -> tuple:
    """model.json's fields, checked without PyTorch (the run list checks them too): model, in_shape, classes,
    dataset, preprocess, the normalisation's (mean, std) or None — finite, one of each per channel, every
    std above 0 (a std of 0 or NaN would turn every prediction into NaN) — and started_from or None."""
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise CnnlabError(f"{source}: not a {RUN_FORMAT!r} file; was it written by another version of cnnlab?")
    model, in_shape, classes, dataset = (data.get(k) for k in ("model", "in_shape", "classes", "dataset"))
    preprocess, folder = data.get("preprocess", ""), data.get("folder", "")  # folder: runs before Run.data_dir
    if not (isinstance(model, str) and model in MODEL_NAMES and isinstance(dataset, str)
            and isinstance(in_shape, list) and len(in_shape) == 3
            and all(type(v) is int and 0 < v <= 2**16 for v in in_shape) and isinstance(classes, list)
            and 0 < len(classes) <= 2**16 and all(isinstance(c, str) for c in classes)
            and isinstance(folder, str) and isinstance(preprocess, str)):
        raise CnnlabError(f"{source}: a field is missing or malformed (model, in_shape, classes, dataset, "
                          f"preprocess or folder); {DAMAGED}")
    if preprocess not in ("", *PREPROCESS_NAMES):
        raise CnnlabError(f"{source}: unknown preprocessing {preprocess!r}; was it written by a newer cnnlab?")
    stats = data.get("normalization")
    if stats is not None:
        try:
            stats = tuple(tuple(float(v) for v in stats[key]) for key in ("mean", "std"))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CnnlabError(f"{source}: malformed normalization; {DAMAGED}") from None
        mean, std = stats
        if len(mean) != in_shape[0] or len(std) != in_shape[0]:
            raise CnnlabError(f"{source}: normalization for {len(mean)} and {len(std)} channels, where the images "
                              f"have {in_shape[0]}; {DAMAGED}")
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise CnnlabError(f"{source}: normalization mean {list(mean)}, std {list(std)}: each must be a finite "
                              f"number, each std above 0; {DAMAGED}")
    started_from = data.get("started_from")
    if started_from is not None and not (
            isinstance(started_from, dict) and isinstance(started_from.get("run"), str)
            and isinstance(started_from.get("path"), str) and isinstance(started_from.get("layers"), list)
            and all(isinstance(layer, str) for layer in started_from["layers"])):
        raise CnnlabError(f"{source}: malformed started_from (the run it started from); {DAMAGED}")
    return model, tuple(in_shape), tuple(classes), dataset, preprocess, stats, started_from


# ---------------------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------------------
class Run:
    """A run folder: its files read when first asked for (the weights too, as ``model``), each checked on the
    way in, and written through here. ``Run(path)`` reads nothing yet; ``load_run`` loads the model at once.

    Values given to the constructor are taken as they are, for a run held in memory."""

    def __init__(self, run_dir: str | os.PathLike, recipe: Recipe | None = None, info: ModelInfo | None = None,
                 model: nn.Module | None = None, history: list[EpochResult] | None = None,
                 metrics: dict[str, Any] | None = None, environment: dict[str, Any] | None = None):
        if not isinstance(run_dir, (str, os.PathLike)):  # load_run, resume_run, from_run: Path() would say less
            raise CnnlabError(f"a run is its folder's path or a Run, not {type(run_dir).__name__}: pass 'runs/NAME'")
        self.run_dir = Path(run_dir)
        given = {"recipe": recipe, "info": info, "model": model, "history": history, "metrics": metrics,
                 "environment": environment}
        self.__dict__.update({key: value for key, value in given.items() if value is not None})

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    def _repr_html_(self) -> str:  # Jupyter
        from .display import run_html

        return run_html(self)

    # --- the files -----------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.run_dir / name

    def has(self, name: str) -> bool:
        """Whether the folder holds ``name`` (a file or anything else there: reading it says whether it is good)."""
        return os.path.lexists(self.run_dir / name)

    def files(self) -> list[str]:
        """The files of the run's format that the folder holds, in the format's order."""
        return [name for name in (*FILES, f"{EVALUATION}/metrics.json") if self.has(name)]

    def read_bytes(self, name: str, limit: int = MAX_READ) -> bytes:
        """A file of the run: a regular file, at most ``limit`` bytes, that does not lead out of the folder."""
        return read_bytes(self.path(name), self.run_dir, limit)

    def _optional_json(self, name: str) -> Any:
        return read_json(self.path(name), self.run_dir) if self.has(name) else None

    @cached_property
    def recipe(self) -> Recipe:
        path = self.path("recipe.json")
        if not self.has("recipe.json"):
            raise CnnlabError(f"{self.run_dir}: not a cnnlab run folder (no recipe.json)")
        try:
            return recipe_from_dict(read_json(path, self.run_dir))
        except UsageError as error:  # a bad field here is a damaged file, not a bad command
            raise CnnlabError(f"{path}: {error}; {DAMAGED}") from None

    @cached_property
    def _model_json(self) -> Any:
        return read_json(self.path("model.json"), self.run_dir)

    @cached_property
    def info(self) -> ModelInfo:
        return ModelInfo.from_dict(self._model_json, self.path("model.json"))

    @cached_property
    def environment(self) -> dict[str, Any]:
        """environment.json: versions, device, date, where the data came from; {} where there is none."""
        environment = self._optional_json("environment.json")
        return {} if environment is None else _checked(
            environment, self.path("environment.json"), texts=("created", "device", "device_name"),
            optional_texts=("data_dir",))

    @cached_property
    def history(self) -> list[EpochResult]:
        return read_history(self.path("history.csv"), self.run_dir) if self.has("history.csv") else []

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """metrics.json, written last by training; {} while the run is unfinished."""
        metrics = self._optional_json("metrics.json")
        return {} if metrics is None else _checked(
            metrics, self.path("metrics.json"), shares=("test_accuracy", "best_val_accuracy", "final_val_accuracy"),
            numbers=("test_loss", "train_seconds"), counts=("best_epoch", "epochs", "parameters"),
            lists=("warnings",), optional_texts=("test_data",))

    @cached_property
    def model(self) -> nn.Module:
        """The network with its weights, in eval mode on the CPU: built from model.json, loaded from the weights."""
        return _load_model(self)

    @property
    def data_dir(self) -> Path | None:
        """Where the run's data came from: the folder of images of a ``--data`` run; the ``--data-dir`` of a data
        set's (None: cnnlab's own lookup). environment.json's ``data_dir`` records both; runs written before it
        did kept a folder run's in model.json."""
        recorded = self.environment.get("data_dir")
        if not recorded and self.has("model.json") and isinstance(self._model_json, dict):
            recorded = self._model_json.get("folder")
        return Path(recorded) if isinstance(recorded, str) and recorded else None

    def read_figure(self, name: str) -> bytes | None:
        """A figure of the run as PNG bytes, or None where the folder lacks it."""
        return self.read_bytes(name) if self.has(name) else None

    def read_evaluation(self) -> dict[str, Any] | None:
        """What ``cnnlab evaluate`` wrote (its metrics and the confusion counts, true class by predicted), or None
        before it has run."""
        if not self.has(f"{EVALUATION}/metrics.json"):
            return None
        metrics = _checked(self._optional_json(f"{EVALUATION}/metrics.json"), self.path(f"{EVALUATION}/metrics.json"))
        counts = f"{EVALUATION}/confusion_counts.csv"
        try:
            text = self.read_bytes(counts).decode()
            confusion = [[int(v) for v in row[1:]] for row in list(csv.reader(io.StringIO(text, newline="")))[1:]]
        except FileNotFoundError:
            raise CnnlabError(f"{self.path(counts)}: missing; evaluate the run again") from None
        except (ValueError, csv.Error) as error:  # true class by predicted class, after a header row
            raise CnnlabError(f"{self.path(counts)}: malformed ({error}); evaluate the run again") from None
        return {**metrics, "confusion": confusion}

    # --- what the run list shows -----------------------------------------------------------------------------
    @property
    def started_from(self) -> dict[str, Any] | None:
        """The run whose trained layers this one started from, as model.json records it (ModelInfo.started_from)."""
        if not self.has("model.json"):
            return None
        return _model_fields(self._model_json, self.path("model.json"))[-1]

    @property
    def finished(self) -> bool:
        return bool(self.metrics)

    @property
    def best_val_accuracy(self) -> float | None:
        return max((row.val_accuracy for row in self.history), default=None)

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    @property
    def test_data(self) -> str | None:
        """The fingerprint of the test images its test accuracy was measured on (cnnlab.data.data_fingerprint);
        None for a run without a test set, or written before it was recorded."""
        return self.metrics.get("test_data")

    @property
    def seconds(self) -> float:
        """Training time, or the epochs' own times for an unfinished run."""
        return self.metrics.get("train_seconds", sum(row.seconds for row in self.history))

    @property
    def created(self) -> str:
        return self.environment.get("created", "")

    def check(self) -> Run:
        """Read every JSON and CSV file the run list shows, raising CnnlabError for the first that is damaged."""
        try:
            self.recipe, self.history, self.metrics, self.environment, self.data_dir  # noqa: B018
            if self.has("model.json"):  # a run being created writes it just after recipe.json
                _model_fields(self._model_json, self.path("model.json"))
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as error:  # what no check foresaw
            raise CnnlabError(f"{self.run_dir}: {type(error).__name__}: {error}; {DAMAGED}") from None
        return self

    # --- writing -------------------------------------------------------------------------------------------------
    def begin(self, recipe: Recipe, info: ModelInfo, device: torch.device,
              data_dir: str | os.PathLike | None = None) -> None:
        """The files a run starts with: recipe.json, model.json, environment.json (``data_dir``: where the data
        came from, the folder of images of a ``--data`` run)."""
        self.write_recipe(recipe)
        write_json(self.path("model.json"), asdict(info))
        self.__dict__.update(info=info, _model_json=asdict(info))
        environment = {**_environment(device), "seed": recipe.seed, "deterministic": recipe.deterministic,
                       "data_dir": None if data_dir is None else str(Path(data_dir).resolve())}
        write_json(self.path("environment.json"), environment)
        self.__dict__["environment"] = environment

    def write_recipe(self, recipe: Recipe) -> None:
        write_json(self.path("recipe.json"), recipe.to_dict())
        self.__dict__["recipe"] = recipe

    def write_history(self, history: list[EpochResult]) -> None:
        write_history(self.path("history.csv"), history)
        self.__dict__["history"] = list(history)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json; training writes it last, so that it marks the run finished."""
        write_json(self.path("metrics.json"), metrics)
        self.__dict__["metrics"] = metrics

    def save_weights(self, model: nn.Module) -> None:
        save_weights(self.path(WEIGHTS), model)
        self.__dict__.pop("model", None)  # the next use loads what was written

    def figure(self, name: str) -> Path:
        """Where the figure ``name`` (one of FIGURES) is written."""
        if name not in FIGURES:
            raise ValueError(f"{name!r} is not a figure of the run folder ({', '.join(FIGURES)})")
        return self.path(name)

    def remove_stale_temp(self) -> list[Path]:
        """Delete what killed writes left in the folder and its evaluation/ (never a write going on)."""
        return remove_stale_temp(self.run_dir) + remove_stale_temp(self.path(EVALUATION))


def _checked(data: Any, source: Path, shares: tuple[str, ...] = (), numbers: tuple[str, ...] = (),
             counts: tuple[str, ...] = (), lists: tuple[str, ...] = (), texts: tuple[str, ...] = (),
             optional_texts: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` if it is a JSON object whose named fields, where present, have their kind: a share from 0 to 1
    or null, a finite number ≥ 0 or null, a count, a list of strings, a string, a string or null."""
    def number(value: Any) -> bool:
        return type(value) in (int, float) and math.isfinite(value) and value >= 0

    kinds = [(shares, lambda v: v is None or number(v) and v <= 1, "a share from 0 to 1 or null"),
             (numbers, lambda v: v is None or number(v), "a number ≥ 0 or null"),
             (counts, lambda v: type(v) is int and v >= 0, "a whole number ≥ 0"),
             (lists, lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v), "a list of texts"),
             (texts, lambda v: isinstance(v, str), "a text"),
             (optional_texts, lambda v: v is None or isinstance(v, str), "a text or null")]
    if not isinstance(data, dict):
        raise CnnlabError(f"{source}: a {type(data).__name__}, where a JSON object is needed; {DAMAGED}")
    for names, good, kind in kinds:
        for name in names:
            if name in data and not good(data[name]):
                raise CnnlabError(f"{source}: {name} is {str(data[name])[:40]!r}, not {kind}; {DAMAGED}")
    return data


def save_run_files(run_dir: str | os.PathLike, recipe: Recipe, info: ModelInfo, device: torch.device,
                   data_dir: str | os.PathLike | None = None) -> None:
    """``Run(run_dir).begin(...)``: for a run folder written by hand (the tests, bench/)."""
    Run(run_dir).begin(recipe, info, device, data_dir)


def _environment(device: torch.device) -> dict[str, Any]:
    import numpy
    import safetensors
    import torch

    from . import __version__, distributed, threads
    from .device import device_name

    info = {"cnnlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "safetensors": safetensors.__version__,
            "platform": platform.platform(), "device": str(device), "device_name": device_name(device),
            "cpu_threads": torch.get_num_threads(),
            "cpu_choice": dict(threads.CHOICE),  # what cnnlab set for OpenMP, and why
            "world_size": distributed.world_size(), "backend": distributed.backend(),  # processes training the run
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return info


# ---------------------------------------------------------------------------------------------------------
# Making, finding and listing run folders
# ---------------------------------------------------------------------------------------------------------
def new_run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """A fresh folder ``runs_dir/name-YYYYMMDD-HHMMSS`` (with a suffix if that exists), checked writable."""
    runs_dir = Path(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        make_folder(runs_dir)
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
                          f"choose another folder with {hint(cli='--runs-dir', python='runs_dir=...')}") from None
    return run_dir


def run_folder(runs_dir: str | os.PathLike, name: str) -> Path | None:
    """The folder ``name`` directly in ``runs_dir``, or None where it is none to open: an empty, hidden or
    odd name ('..', a slash), not a folder, or a link that leads out of ``runs_dir``."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        return None
    folder = Path(runs_dir) / name
    try:
        if folder.is_dir() and folder.resolve().parent == Path(runs_dir).resolve():
            return folder
    except (OSError, ValueError, RuntimeError):  # a name too long, a loop of links
        pass
    return None


def scan_runs(runs_dir: str | os.PathLike = "runs") -> tuple[list[Run], list[tuple[Path, str]]]:
    """The run folders directly in ``runs_dir`` that ``run_folder`` would open, oldest first (their JSON and
    CSV files read, never their weights), and the damaged ones with what is wrong."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        what = "a file, not a folder" if runs_dir.exists() else "no such folder"
        raise CnnlabError(f"{runs_dir}: {what}; training writes runs under ./runs (or "
                          f"{hint(cli='--runs-dir', python='runs_dir=...')})")
    runs, damaged = [], []
    for name in sorted(os.listdir(runs_dir)):
        folder = run_folder(runs_dir, name)
        if folder is None or not os.path.lexists(folder / "recipe.json"):
            continue
        try:
            runs.append(Run(folder).check())
        except CnnlabError as error:
            damaged.append((folder, str(error)))
    return sorted(runs, key=lambda run: (run.created, run.run_dir.name)), damaged


def list_runs(runs_dir: str | os.PathLike = "runs") -> list[Run]:
    """``scan_runs``'s runs; a damaged one is named in a warning and left out, so one bad folder never hides
    the others."""
    runs, damaged = scan_runs(runs_dir)
    for _, message in damaged:
        warn(f"damaged, left out: {message}")
    return runs


# ---------------------------------------------------------------------------------------------------------
# Loading a run: its model, its test set
# ---------------------------------------------------------------------------------------------------------
def load_run(run: Run | str | os.PathLike) -> Run:
    """The run with its model loaded (recipe, model.json and weights read and checked now); given a Run, that
    Run, its model loaded if it was not."""
    if not isinstance(run, Run):
        run = Run(run)
        if not run.run_dir.is_dir():
            raise CnnlabError(f"{run.run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    run.recipe, run.model  # noqa: B018
    return run


MAX_INPUT_VALUES = 2**22  # C×H×W of one image: 3×1182×1182, far past any image cnnlab trains on
MAX_CHECKED_PARAMETERS = 2**27


def _load_model(run: Run) -> nn.Module:
    """Rebuild the run's network from model.json and load its weights (JSON and safetensors only)."""
    import torch

    from .models import create_model

    info = run.info
    # On the meta device, shapes without memory: nothing large is allocated, whatever model.json says.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an absurd in_shape makes empty layers that warn; the checks below speak
        model = create_model(info.model, info.in_shape, len(info.classes))
    _check_input_shape(model, info, run.run_dir)
    if not run.has(WEIGHTS) and run.has(CHECKPOINT):
        if (owner := lock_owner(run.run_dir)) is not None:  # resuming it now would only meet the lock
            raise CnnlabError(f"{run.run_dir}: training has not finished; process {owner} is training it now: wait "
                              "for it to finish, then load it")
        raise CnnlabError(f"{run.run_dir}: training has not finished; continue it with " + hint(
            cli=f"`cnnlab train --resume {run.run_dir}`", python=f"cnnlab.resume_run({str(run.run_dir)!r})"))
    model = load_weights(run.path(WEIGHTS), model, run.run_dir)
    model.eval()
    if math.prod(info.in_shape) > MAX_INPUT_VALUES:  # after the weights, whose shapes name most such damage
        raise CnnlabError(f"{run.path('model.json')}: images of shape {info.in_shape} are far too large "
                          f"(over {MAX_INPUT_VALUES:,} values); {DAMAGED}")
    return model


def _check_input_shape(model: nn.Module, info: ModelInfo, run_dir: Path) -> None:
    """Refuse an ``in_shape`` the network cannot take, by one forward pass of a zero image through a copy
    with zero weights on the CPU, where that is small. (A pass on the meta device would say the same, but
    PyTorch's meta kernels import its compiler, a second or more of a one-image `cnnlab predict`.)"""
    import copy

    import torch

    if math.prod(info.in_shape) > MAX_INPUT_VALUES or \
            sum(p.numel() for p in model.parameters()) > MAX_CHECKED_PARAMETERS:
        return  # the weights' shapes, then the size bound in _load_model, refuse what this cannot check
    probe = copy.deepcopy(model)  # zeros on the CPU for every tensor (to_empty would reach the meta kernels)
    probe.load_state_dict({key: torch.zeros(t.shape, dtype=t.dtype) for key, t in model.state_dict().items()},
                          assign=True)
    probe.eval()  # BatchNorm takes a batch of one
    try:
        with torch.no_grad():
            probe(torch.zeros(1, *info.in_shape))
    except (RuntimeError, ValueError) as error:
        raise CnnlabError(f"{run_dir / 'model.json'}: {info.model} cannot take images of shape "
                          f"{info.in_shape} ({error}); {DAMAGED}") from None


def _pass_data_dir() -> str:
    return hint(cli="pass --data-dir FOLDER", python="pass data_dir=FOLDER")


def data_location(run: Run, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Where a run's data is read from, to evaluate or to resume it: ``data_dir``, else where it was trained
    (``Run.data_dir``); None for a data set's run that recorded none (cnnlab's own lookup finds it). A folder
    that is not there is a DataMissing naming it, before any lookup could download a data set instead."""
    dataset = run.info.dataset != "folder"
    if data_dir is not None and dataset:
        return Path(data_dir)  # looked in first, then cnnlab's own places: locate says what is missing where
    root = Path(data_dir) if data_dir is not None else run.data_dir
    if (root is None and dataset) or (root is not None and root.is_dir()):
        return root
    if dataset:
        raise DataMissing(f"{run.run_dir} was trained on data in {root}, which is gone",
                          f"{_pass_data_dir()} where the data set is now")
    raise DataMissing(f"{run.run_dir} was trained on the images in {root or 'a folder it does not record'}"
                      f"{', which is gone' if root else ''}", f"{_pass_data_dir()} where they are now")


def load_test_set(run: Run | str | os.PathLike, data_dir: str | os.PathLike | None = None) -> ImageSet:
    """The test images of a run's data set, from ``data_dir`` or else where the run was trained (``Run.data_dir``;
    cnnlab's own lookup when a data set's run recorded none); for a folder run, its test/ part."""
    from .data import load_test_images
    from .images import load_folder

    run = run if isinstance(run, Run) else Run(run)
    info, root = run.info, data_location(run, data_dir)
    if info.dataset != "folder":
        return load_test_images(info.dataset, root)
    assert root is not None  # data_location names a folder run's images, or refuses
    test = load_folder(root, info.in_shape, info.preprocess, classes=info.classes, parts=("test",)).test
    if test is None:
        raise CnnlabError(f"{root}: has no test/ folder, so this run has no test set; put images in "
                          f"{root / 'test'}/CLASS/ to evaluate, or predict single files with `cnnlab predict`")
    return test
