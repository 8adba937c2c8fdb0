"""The tutorial's figures, as PNG files: a training sample, learning curves, three predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .train import EpochResult  # noqa: E402


def image_array(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) → what imshow takes: (H, W) for grey, (H, W, 3) for colour."""
    array = image.cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def show_image(axis, image: torch.Tensor) -> None:
    array = image_array(image)
    axis.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])


def save_figure(figure, path: Path) -> None:
    from .runs import atomic_write
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic_write(Path(path), buffer.getvalue())


def _label_text(label: int, classes: Sequence[str]) -> str:
    name = classes[label] if label < len(classes) else ""
    return f"[{label}]" + (f" {name}" if name and name != str(label) else "")


def plot_sample(image: torch.Tensor, label: int, classes: Sequence[str], path: Path) -> None:
    """One training image, as the tutorial shows before training."""
    figure, axis = plt.subplots(figsize=(3, 3))
    show_image(axis, image)
    axis.set_title(f"Training sample: {_label_text(label, classes)}")
    save_figure(figure, path)


def plot_curves(history: list[EpochResult], metric: str, path: Path) -> None:
    """Train and validation ``metric`` ('accuracy' or 'loss') per epoch, labelled as they are."""
    epochs = [row.epoch for row in history]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, [getattr(row, metric) for row in history], "o-", label=f"train {metric}")
    axis.plot(epochs, [getattr(row, f"val_{metric}") for row in history], "s-", label=f"validation {metric}")
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    axis.set_title(f"{metric.capitalize()} per epoch")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def plot_predictions(images: torch.Tensor, labels: Sequence[int], predicted: Sequence[int],
                     classes: Sequence[str], path: Path) -> None:
    """Each image titled as the tutorial titles it: ``Label value = [7]  Predicted value = [7]``."""
    named = any(name != str(i) for i, name in enumerate(classes))
    figure, axes = plt.subplots(1, len(images), figsize=(4.2 * len(images), 4.4), squeeze=False)
    for axis, image, label, guess in zip(axes[0], images, labels, predicted):
        show_image(axis, image)
        title = f"Label value = [{label}]  Predicted value = [{guess}]"
        if named:
            title += f"\n{classes[label]} / {classes[guess]}"
        axis.set_title(title, fontsize=10, color="black" if label == guess else "crimson")
    save_figure(figure, path)
