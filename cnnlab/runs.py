"""Run folders: the format, written and read. Everything needed to understand and reload a training run.

A run folder holds ``recipe.json`` (the resolved recipe), ``model.json`` (what rebuilds the network and how
its input was prepared), ``weights.safetensors``, ``history.csv``, ``metrics.json``, ``environment.json``
and the tutorial's figures; while it trains, ``checkpoint.safetensors`` too. Nothing in it is ever unpickled.
PyTorch is imported only by what handles tensors, so listing runs needs none.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError, UsageError
from .files import atomic_write, check_writable, read_json, write_json
from .history import EpochResult, read_history
from .recipes import MODEL_NAMES, Recipe, recipe_from_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .augment import Normalization
    from .data import ImageSet

RUN_FORMAT = "cnnlab-run/1"
CHECKPOINT = "checkpoint.safetensors"  # the last finished epoch's full state (cnnlab.checkpoint)


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


def environment(device: torch.device) -> dict[str, Any]:
    import numpy
    import safetensors
    import torch

    from . import __version__, distributed, threads

    info = {"cnnlab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "safetensors": safetensors.__version__,
            "platform": platform.platform(), "device": str(device), "cpu_threads": torch.get_num_threads(),
            "cpu_choice": dict(threads.CHOICE),  # what cnnlab set for OpenMP, and why
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
        from .augment import Normalization
        from .images import PREPROCESS

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
        if not (isinstance(model, str) and model in MODEL_NAMES and isinstance(dataset, str)
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
    environment: dict[str, Any] = field(default_factory=dict)  # environment.json: versions, device, data folder

    @property
    def data_dir(self) -> Path | None:
        return recorded_data_dir(self.environment)

    def _repr_html_(self) -> str:  # Jupyter
        from .display import run_html

        return run_html(self)


def recorded_data_dir(environment: Any) -> Path | None:
    """The data folder a run was trained on, as environment.json records it when ``--data-dir`` was given;
    None: cnnlab's own lookup."""
    recorded = environment.get("data_dir") if isinstance(environment, dict) else None
    return Path(recorded) if isinstance(recorded, str) and recorded else None


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
    import torch

    from .models import create_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"{run_dir}: no such run folder; `cnnlab train` prints the folder it writes")
    recipe = read_recipe(run_dir / "recipe.json")
    info = ModelInfo.from_dict(read_json(run_dir / "model.json"), run_dir / "model.json")
    # On the meta device, shapes without memory: nothing large is allocated, whatever model.json says.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an absurd in_shape makes empty layers that warn; the checks below speak
        model = create_model(info.model, info.in_shape, len(info.classes))
    _check_input_shape(model, info, run_dir)
    if not (run_dir / "weights.safetensors").exists() and (run_dir / CHECKPOINT).exists():
        raise CnnlabError(f"{run_dir}: training has not finished; continue it with `cnnlab train --resume {run_dir}`")
    model = load_weights(run_dir / "weights.safetensors", model)
    model.eval()
    if math.prod(info.in_shape) > MAX_INPUT_VALUES:  # after the weights, whose shapes name most such damage
        raise CnnlabError(f"{run_dir / 'model.json'}: images of shape {info.in_shape} are far too large "
                          f"(over {MAX_INPUT_VALUES:,} values); the run folder is damaged")
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    environment = read_json(run_dir / "environment.json") if (run_dir / "environment.json").exists() else {}
    return Run(run_dir, recipe, info, model, history, metrics, environment if isinstance(environment, dict) else {})


MAX_INPUT_VALUES = 2**22  # C×H×W of one image: 3×1182×1182, far past any image cnnlab trains on
MAX_CHECKED_PARAMETERS = 2**27


def _check_input_shape(model: nn.Module, info: ModelInfo, run_dir: Path) -> None:
    """Refuse an ``in_shape`` the network cannot take, by one forward pass of a zero image through a copy
    with zero weights on the CPU, where that is small. (A pass on the meta device would say the same, but
    PyTorch's meta kernels import its compiler, a second or more of a one-image `cnnlab predict`.)"""
    import copy

    import torch

    if math.prod(info.in_shape) > MAX_INPUT_VALUES or \
            sum(p.numel() for p in model.parameters()) > MAX_CHECKED_PARAMETERS:
        return  # the weights' shapes, then the size bound in load_run, refuse what this cannot check
    probe = copy.deepcopy(model)  # zeros on the CPU for every tensor (to_empty would reach the meta kernels)
    probe.load_state_dict({key: torch.zeros(t.shape, dtype=t.dtype) for key, t in model.state_dict().items()},
                          assign=True)
    probe.eval()  # BatchNorm takes a batch of one
    try:
        with torch.no_grad():
            probe(torch.zeros(1, *info.in_shape))
    except (RuntimeError, ValueError) as error:
        raise CnnlabError(f"{run_dir / 'model.json'}: {info.model} cannot take images of shape "
                          f"{info.in_shape} ({error}); the run folder is damaged") from None


def load_test_set(run: Run, data_dir: str | os.PathLike | None = None) -> ImageSet:
    """The test images of a run's data set, from ``data_dir`` or else where the run was trained: the folder
    it recorded, or cnnlab's own lookup when it recorded none; for a folder run, its test/ part."""
    from .data import load_test_images
    from .images import load_folder

    info = run.info
    if data_dir is None and info.dataset != "folder" and run.data_dir is not None:
        data_dir = run.data_dir
        if not data_dir.is_dir():
            raise CnnlabError(f"{run.run_dir} was trained on data in {data_dir}, which is gone; "
                              "pass --data-dir FOLDER where the data set is now")
    if info.dataset != "folder":
        return load_test_images(info.dataset, data_dir)
    root = Path(data_dir or info.folder)
    if not root.is_dir():
        raise CnnlabError(f"{run.run_dir} was trained on the images in {root}, which is gone; "
                          "pass --data-dir FOLDER where they are now")
    test = load_folder(root, info.in_shape, info.preprocess, classes=info.classes, parts=("test",)).test
    if test is None:
        raise CnnlabError(f"{root}: has no test/ folder, so this run has no test set; put images in "
                          f"{root / 'test'}/CLASS/ to evaluate, or predict single files with `cnnlab predict`")
    return test
