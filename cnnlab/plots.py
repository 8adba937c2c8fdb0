"""The tutorial's figures: a training sample, learning curves, three predictions. Each helper returns its
matplotlib figure (closed: a notebook shows it once, as the cell's value) and, given a path, writes it as PNG.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):  # Jupyter's kernel names its inline backend there; elsewhere files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .data import class_names  # noqa: E402
from .files import SOFTWARE, atomic_write  # noqa: E402
from .history import EpochResult  # noqa: E402


def image_array(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) → what imshow takes: (H, W) for grey, (H, W, 3) for colour."""
    array = image.cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def show_image(axis, image: torch.Tensor | np.ndarray) -> None:
    """A uint8 image, (C, H, W) tensor or (H, W[, 3]) array, at its own values (grey colour map when grey)."""
    array = image_array(image) if isinstance(image, torch.Tensor) else image
    axis.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])


def figure_png(figure) -> bytes:
    """The figure as PNG bytes; it is closed."""
    import io

    buffer = io.BytesIO()
    # 'Software: cnnlab' marks the file as one cnnlab may replace (files.check_replaceable)
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": SOFTWARE})
    plt.close(figure)
    return buffer.getvalue()


def save_figure(figure, path: Path) -> None:
    atomic_write(Path(path), figure_png(figure))


def finish_figure(figure, path: Path | None = None) -> Figure:
    """Write ``figure`` to ``path`` when one is given; the figure, closed, either way."""
    if path is not None:
        save_figure(figure, path)
    plt.close(figure)
    return figure


def _label_text(label: int, classes: Sequence[str]) -> str:
    name = classes[label] if label < len(classes) else ""
    return f"[{label}]" + (f" {name}" if name and name != str(label) else "")


def plot_sample(image: torch.Tensor, label: int, classes: Sequence[str] | int, path: Path | None = None) -> Figure:
    """One training image, as the tutorial shows before training; ``classes``: the names, or their count."""
    figure, axis = plt.subplots(figsize=(3, 3))
    show_image(axis, image)
    axis.set_title(f"Training sample: {_label_text(label, class_names(classes))}")
    return finish_figure(figure, path)


def epoch_axis(axis) -> None:
    """An x axis of epochs, ticked at whole numbers only: no 0.96, 0.98 … on a short run."""
    axis.set_xlabel("epoch")
    # min_n_ticks=1, or a 1-epoch run's view, which holds one whole number, falls back to fractions.
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_curves(history: Sequence[EpochResult], metric: str, path: Path | None = None) -> Figure:
    """Train and validation ``metric`` ('accuracy' or 'loss') per epoch, labelled as they are."""
    epochs = [row.epoch for row in history]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, [getattr(row, metric) for row in history], "o-", label=f"train {metric}")
    axis.plot(epochs, [getattr(row, f"val_{metric}") for row in history], "s-", label=f"validation {metric}")
    epoch_axis(axis)
    axis.set_ylabel(metric)
    axis.set_title(f"{metric.capitalize()} per epoch")
    axis.grid(alpha=0.3)
    axis.legend()
    return finish_figure(figure, path)


def plot_predictions(images: torch.Tensor, labels: Sequence[int], predicted: Sequence[int],
                     classes: Sequence[str] | int, path: Path | None = None) -> Figure:
    """Each image titled as the tutorial titles it: ``Label value = [7]  Predicted value = [7]``; ``classes``: the
    names, or their count."""
    classes = class_names(classes)
    named = any(name != str(i) for i, name in enumerate(classes))
    figure, axes = plt.subplots(1, len(images), figsize=(4.2 * len(images), 4.4), squeeze=False)
    for axis, image, label, guess in zip(axes[0], images, labels, predicted):
        show_image(axis, image)
        title = f"Label value = [{label}]  Predicted value = [{guess}]"
        if named:
            title += f"\n{classes[label]} / {classes[guess]}"
        axis.set_title(title, fontsize=10, color="black" if label == guess else "crimson")
    return finish_figure(figure, path)


def plot_image(image: torch.Tensor | np.ndarray, title: str, path: Path | None = None) -> Figure:
    """One image at its own resolution, grey colour map for grey images (the tutorial's lab 1)."""
    figure, axis = plt.subplots(figsize=(4, 4))
    show_image(axis, image)
    axis.set_title(title, fontsize=9)
    return finish_figure(figure, path)


def plot_probabilities(image: torch.Tensor, probabilities: torch.Tensor, classes: Sequence[str], title: str,
                       path: Path | None = None) -> Figure:
    """The input exactly as the network received it, beside a bar chart of the class probabilities."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    show_image(left, image)
    left.set_title("network input", fontsize=9)
    values = probabilities.tolist()
    best = max(range(len(values)), key=values.__getitem__)
    right.barh(range(len(values)), values, color=["crimson" if i == best else "steelblue" for i in range(len(values))])
    labels = [f"[{i}] {name}" if name != str(i) else name for i, name in enumerate(classes)]
    right.set_yticks(range(len(values)), labels, fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    figure.suptitle(title, fontsize=10)
    return finish_figure(figure, path)


def figure_path(folder: Path, source: str | Path, taken: set[Path]) -> Path:
    """``folder/<name of source>.png``, numbered when two sources share a name."""
    stem = Path(source).stem or "image"
    path, n = folder / f"{stem}.png", 1
    while path in taken:
        n += 1
        path = folder / f"{stem}-{n}.png"
    taken.add(path)
    return path
