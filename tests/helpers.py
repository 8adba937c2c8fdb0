"""What the tests share that is not a fixture: writers of small data sets in the real file formats (so no test
downloads anything), comparing two runs, killing a training process, the studio on a free port and the browser's
settings. Plain functions with no pytest in them, so bench/ scripts use them too; the fixtures are in conftest.py."""
from __future__ import annotations

import contextlib
import gzip
import json
import pickle
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # the checkout under test: PYTHONPATH for the processes tests start
SHARED = REPO.parent / "shared"
MNIST_SAMPLE = SHARED / "datasets" / "mnist-sample"
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, as MNIST publishes them (before gzip)."""
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def learnable_images(labels: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Noise with a bright block whose place depends on the label: easy to learn, never constant."""
    channels, height, width = shape
    images = rng.integers(0, 60, size=(len(labels), channels, height, width), dtype=np.uint8)
    block = height // 4
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, :, row * block:(row + 1) * block, col * block:(col + 1) * block] = 230
    return images


def make_idx_dataset(folder: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """MNIST's four files (gzipped IDX) holding learnable 28×28 digits."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", learnable_images(labels, (1, 28, 28), rng)[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """One CIFAR-10 batch as the Python version ships it: a pickled dict with N×3072 uint8 'data'."""
    return pickle.dumps({"batch_label": "fake batch", "labels": [int(v) for v in labels],
                         "data": images.reshape(len(images), -1),
                         "filenames": [f"{i}.png" for i in range(len(labels))]}, protocol=2)


def make_cifar_dataset(folder: Path, n_per_batch: int = 40, seed: int = 0) -> Path:
    """CIFAR-10's five training batches and its test batch, inside cifar-10-batches-py/."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=n_per_batch)
        (batches / name).write_bytes(cifar_batch_bytes(learnable_images(labels, (3, 32, 32), rng), labels))
    return folder


# ---------------------------------------------------------------------------------------------------------
# Shapes drawn as a learner draws them with the mouse (the Teach view, tests/test_transfer.py, bench/transfer.py)
# ---------------------------------------------------------------------------------------------------------
SHAPES = ("circle", "cross", "line")


def draw_shape(kind: str, rng: np.random.Generator, size: int = 280):
    """A black ``kind`` (one of SHAPES) on a white ``size``×``size`` canvas, as drawn by hand: a random place,
    size and angle, a stroke 8–22 pixels wide (per stroke), and a path that wobbles. A PIL image, mode L."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.18, 0.4) * size
    centre = rng.uniform(radius + 12, size - radius - 12, 2)
    angle = rng.uniform(0, np.pi)

    def stroke(points: np.ndarray) -> None:
        along = np.linspace(0, 1, len(points))  # wobble: a smooth random offset along the path, 2–3% of the canvas
        wobble = np.stack([np.interp(along, np.linspace(0, 1, 5), rng.normal(0, 0.025 * size, 5)) for _ in "xy"], 1)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        path = points @ turn.T + centre + wobble
        width = int(rng.integers(8, 23))
        draw.line([tuple(point) for point in path], fill=0, width=width, joint="curve")
        for end in (path[0], path[-1]):  # round pen ends
            draw.ellipse([*(end - width / 2), *(end + width / 2)], fill=0)

    if kind == "circle":  # an ellipse, closed with a little overlap, started anywhere
        turn = np.linspace(0, 2 * np.pi * rng.uniform(1.0, 1.12), 60) + rng.uniform(0, 2 * np.pi)
        stroke(np.stack([np.cos(turn), rng.uniform(0.75, 1.0) * np.sin(turn)], 1) * radius)
    elif kind == "line":
        stroke(np.stack([np.linspace(-1, 1, 30), np.zeros(30)], 1) * radius)
    elif kind == "cross":  # two strokes at roughly a right angle, their crossing off the middle by a little
        for skew in (0.0, np.pi / 2 + rng.uniform(-0.3, 0.3)):
            line = np.stack([np.linspace(-1, 1, 30), np.zeros(30)], 1) * radius * rng.uniform(0.8, 1.0)
            line += rng.uniform(-0.15, 0.15, 2) * radius
            stroke(line @ np.array([[np.cos(skew), -np.sin(skew)], [np.sin(skew), np.cos(skew)]]).T)
    else:
        raise ValueError(f"unknown shape {kind!r}: one of {SHAPES}")
    return image


def make_shape_folder(folder: Path, per_class: int, seed: int, part: str = "") -> Path:
    """``folder/[part/]CLASS/NNN.png``: ``per_class`` drawings of each of SHAPES, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (folder / part / kind).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            draw_shape(kind, rng).save(folder / part / kind / f"{index:03d}.png")
    return folder


RUN_FILES = {"recipe.json", "model.json", "environment.json", "history.csv", "metrics.json", "weights.safetensors",
             "sample.png", "accuracy.png", "loss.png", "predictions.png"}  # what a finished run folder holds


def move_data(run_dir: Path, data_dir: Path) -> None:
    """Make ``run_dir`` record ``data_dir`` as where it was trained from, as a run whose data has since moved."""
    environment = run_dir / "environment.json"
    environment.write_text(json.dumps({**json.loads(environment.read_text()), "data_dir": str(data_dir)}))


def history(run_dir: Path) -> list[dict]:
    """Every number of every epoch, at full precision, but the wall time."""
    from safetensors import safe_open

    with safe_open(str(run_dir / "checkpoint.safetensors"), "pt") as f:
        rows = json.loads(f.metadata()["state"])["history"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    import torch
    from safetensors.torch import load_file

    assert history(run_dir) == history(reference)
    weights, expected = load_file(run_dir / "weights.safetensors"), load_file(reference / "weights.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)  # bit for bit
    assert json.loads((run_dir / "metrics.json").read_text())["test_loss"] == \
        json.loads((reference / "metrics.json").read_text())["test_loss"]


def same_weights(model: Any, before: dict[str, Any]) -> bool:
    """Does ``model`` still hold ``before`` (its state_dict, cloned on the CPU)? Compared on the CPU: fit moves a
    model to its device ('auto': CUDA, where present) before it checks the data and refuses."""
    import torch

    return all(torch.equal(before[k], v.cpu()) for k, v in model.state_dict().items())


# A script for a separate process: once `kill_at` optimiser steps are done, the main process (rank 0 under
# torchrun) sends itself `signal`.
KILLER = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
steps = 0
def hook(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == {kill_at} and os.environ.get("RANK", "0") == "0":
        os.kill(os.getpid(), signal.{signal})
register_optimizer_step_post_hook(hook)
from cnnlab import cli
sys.exit(cli.main({argv!r}))
"""


# ---------------------------------------------------------------------------------------------------------
# The studio on a free port, and the one way the tests drive a browser: Playwright on Debian's chromium
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def running_studio(runs_dir: Path, **options) -> Iterator[str]:
    """``cnnlab studio`` for ``runs_dir`` in a thread of this process; its base URL."""
    import uvicorn

    from cnnlab.studio import bind, create_app

    app = create_app(runs_dir, "cpu", **options)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class HeldDecode:
    """An upload whose decoding waits until ``done`` is set, once ``decoding`` says it has begun."""
    body: bytes = b"a large image"
    decoding: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


@dataclass
class Watched:
    """A page and everything that went wrong on it: console errors, uncaught exceptions, failed requests,
    HTTP errors."""
    page: Any
    problems: list[str] = field(default_factory=list)


def drawn(screenshot: bytes) -> bool:
    """A screenshot with something on it: not one flat colour, some dark text or figures."""
    import io

    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(screenshot)).convert("L"), dtype=float)
    return grey.std() > 20 and (grey < 128).mean() > 0.01
