"""What the network sees: the first convolution's filters, an image's feature maps after each convolution and
after each pooling, and the pixels that drove its prediction (gradient saliency and occlusion).

The figures go to ``RUN_DIR/explain/``. A network without convolutions (the MLP) has no filters or feature
maps; its first dense layer's weights are drawn as images instead, and the pixel maps work for any network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .device import Device, borrowed, choose_device
from .errors import CnnlabError
from .files import make_folder
from .inference import Inference, Source
from .runs import Run, load_run

FOLDER = "explain"
PATCH = 4  # side of the black square occlusion slides over the image, in pixels
SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)  # the layers that start a new stage of feature maps


# ---------------------------------------------------------------------------------------------------------
# Inside the network
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    name: str  # the layers that made it, e.g. 'conv2d + relu'
    maps: torch.Tensor  # (C, H, W) float


def first_layer_weights(model: nn.Module) -> tuple[str, torch.Tensor] | None:
    """The first convolution's name and kernels (N, C, kh, kw); None for a network without one."""
    return next(((name, module.weight.detach().cpu()) for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d)), None)


def dense_weights_as_images(model: nn.Module, in_shape: tuple[int, int, int]) -> tuple[str, torch.Tensor]:
    """The first dense layer's weights, one (C, H, W) image per unit: what each unit looks for in the input."""
    name, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear))
    return name, layer.weight.detach().cpu().reshape(-1, *in_shape)


def feature_stages(model: Source, image: torch.Tensor) -> list[Stage]:
    """The input, then the feature maps after each convolution (with the activation that follows it) and after
    each pooling, up to where the network flattens them; for the image as it is (the first test-time pass).

    ``model``: a network, a run (its normalisation and precision too) or an Inference.
    """
    inputs, layers, _ = Inference.of(model).trace(image)  # inputs (1, C, H, W)
    stages = [Stage("input", inputs[0].cpu())]
    for name, module, output in layers:
        if output.dim() != 4:
            break  # flattened: the spatial part of the network is over
        if isinstance(module, SPATIAL):
            stages.append(Stage(name, output[0].float().cpu()))
        elif len(stages) > 1:  # an activation or dropout acting on the last stage's maps
            stages[-1] = Stage(f"{stages[-1].name} + {name}", output[0].float().cpu())
    return stages


def saliency(model: Source, image: torch.Tensor, target: int) -> torch.Tensor:
    """|∂ logit[target] / ∂ pixel|, the largest over channels: (H, W). The logit is the answer's: on a run with
    test-time augmentation, the mean over its passes, as the probabilities are."""
    inference = Inference.of(model)
    with borrowed(inference.model):
        inputs = inference.prepare(image[None]).requires_grad_(True)
        # The weights' gradients are not needed.
        (gradient,) = torch.autograd.grad(inference.logits(inputs)[0, target], inputs)
    return gradient[0].abs().amax(dim=0).cpu()


def occlusion(model: Source, image: torch.Tensor, target: int, patch: int = PATCH, stride: int = 2) -> torch.Tensor:
    """How much the probability of ``target`` drops when a black ``patch``×``patch`` square covers each pixel,
    averaged over the squares that cover it: (H, W). Positive where the pixels supported the prediction."""
    inference = Inference.of(model)
    _, height, width = image.shape
    corners = [(top, left) for top in range(0, height - patch + 1, stride)
               for left in range(0, width - patch + 1, stride)]
    covered = image.repeat(len(corners), 1, 1, 1)  # (P, C, H, W) uint8
    for i, (top, left) in enumerate(corners):
        covered[i, :, top:top + patch, left:left + patch] = 0
    baseline = inference.proba(image[None])[0, target]
    drops = baseline - inference.proba(covered)[:, target]
    heat, count = torch.zeros(height, width), torch.zeros(height, width)
    for drop, (top, left) in zip(drops.tolist(), corners):
        heat[top:top + patch, left:left + patch] += drop
        count[top:top + patch, left:left + patch] += 1
    return heat / count.clamp(min=1)


# ---------------------------------------------------------------------------------------------------------
# A run, explained
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Explanation:
    source: str  # where the image came from
    predicted: str
    probability: float
    label: str | None  # the true class, when the image came from the test set
    stages: list[tuple[str, tuple[int, ...]]]  # (name, (C, H, W)) from the input to the last pooling
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def explain_run(run_dir: str | os.PathLike, image_path: str | os.PathLike | None = None, index: int = 0,
                data_dir: str | os.PathLike | None = None, device: Device = None) -> Explanation:
    """`cnnlab explain`: figures of what ``run_dir``'s network sees in one image, into ``RUN_DIR/explain/``.

    The image is ``image_path`` if given, else test image number ``index``. ``device``: None is 'auto'.
    """
    run = load_run(run_dir)
    notes = []
    if image_path is not None:
        from .images import prepare_file

        image = prepare_file(image_path, run.info.preprocess, run.info.in_shape)  # exactly as predict sees it
        source, label = str(image_path), None
        notes.append(f"{image_path}: prepared as {run.info.preprocess!r}, as the run's training images were made")
    else:
        from .runs import load_test_set

        test = load_test_set(run, data_dir)
        if not 0 <= index < len(test):
            raise CnnlabError(f"--index {index}: the test set holds images 0 to {len(test) - 1}")
        image, source, label = test.images[index], f"test image #{index}", test.classes[int(test.labels[index])]
    run.model.to(choose_device(device))  # the run is this function's own: None is 'auto'
    return explain_image(run, image, run.run_dir / FOLDER, source, label, notes)


def explain_image(run: Run, image: torch.Tensor, folder: Path, source: str, label: str | None = None,
                  notes: list[str] | None = None) -> Explanation:
    """Draw filters (or dense weights), feature maps and pixel maps for ``image`` (uint8 (C, H, W)) into ``folder``."""
    make_folder(folder)
    model, classes, inference = run.model, run.info.classes, Inference.of(run)
    probabilities = inference.proba(image[None])[0]
    target = int(probabilities.argmax())
    stages = feature_stages(inference, image)
    explanation = Explanation(source, classes[target], float(probabilities[target]), label,
                              [(s.name, tuple(s.maps.shape)) for s in stages], notes=list(notes or []))
    if inference.tta != "none":
        explanation.notes.append(f"test-time augmentation {inference.tta!r}: the prediction and the pixel maps "
                                 f"are of {inference.passes}; the feature maps show the image as it is")

    first = first_layer_weights(model)
    if first is None:
        name, weights = dense_weights_as_images(model, run.info.in_shape)
        explanation.notes.append(f"model {run.info.model!r} has no convolution, so it has no filters or feature "
                                 f"maps; dense_weights.png shows its first dense layer ({name}) as images instead")
        plot_kernels(weights[:32], f"{name}: weights of the first 32 of its {len(weights)} units, one "
                     f"{weights.shape[2]}×{weights.shape[3]} image each", folder / "dense_weights.png")
        explanation.files.append(folder / "dense_weights.png")
    else:
        name, weights = first
        plot_kernels(weights, f"{name}: its {len(weights)} filters, {weights.shape[2]}×{weights.shape[3]} "
                     f"each", folder / "filters.png")
        plot_stages(stages, source, folder / "feature_maps.png")
        explanation.files += [folder / "filters.png", folder / "feature_maps.png"]

    title = f"{source}: predicted {classes[target]} ({probabilities[target]:.0%})"
    title += f", true {label}" if label else ""
    plot_attribution(image, saliency(inference, image, target), occlusion(inference, image, target), title,
                     classes[target], folder / "saliency.png")
    explanation.files.append(folder / "saliency.png")
    return explanation


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------
def plot_kernels(weights: torch.Tensor, title: str, path: Path, columns: int = 8) -> None:
    """Kernels (N, C, h, w): grey ones on a red–blue scale around zero, colour ones stretched to RGB each."""
    from .plots import plt, save_figure

    rows = -(-len(weights) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.6), squeeze=False,
                                layout="constrained")
    limit = float(weights.abs().max()) or 1.0
    for i, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if i >= len(weights):
            axis.axis("off")
            continue
        kernel = weights[i]
        if kernel.shape[0] == 1:
            axis.imshow(kernel[0].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        else:
            low, high = kernel.min(), kernel.max()
            axis.imshow(((kernel - low) / (high - low + 1e-12)).permute(1, 2, 0).numpy())
        axis.set_title(str(i), fontsize=7)
    scale = "red +, blue −" if weights.shape[1] == 1 else "colours stretched to each kernel's own range"
    figure.suptitle(f"{title} ({scale})", fontsize=9)
    save_figure(figure, path)


def plot_stages(stages: list[Stage], source: str, path: Path, channels: int = 8) -> None:
    """One row per stage, its first ``channels`` maps drawn at their true size against the input's, so that
    'same' padding keeping 28×28 and pooling halving it to 14×14 can be seen."""
    from .plots import plt, save_figure

    _, height, width = stages[0].maps.shape
    figure, axes = plt.subplots(len(stages), channels, figsize=(1.5 * channels, 1.75 * len(stages)),
                                squeeze=False, layout="constrained")
    for row, stage in zip(axes, stages):
        maps = stage.maps
        for c, axis in enumerate(row):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlim(-0.5, width - 0.5)
            axis.set_ylim(height - 0.5, -0.5)
            if stage.name == "input":
                if c == 0:
                    array = maps[0] if maps.shape[0] == 1 else maps.permute(1, 2, 0)
                    axis.imshow(array.numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    axis.axis("off")
            elif c < len(maps):
                axis.imshow(maps[c].numpy(), cmap="viridis", vmin=0, vmax=float(maps.max()) or 1.0)
                axis.set_title(f"map {c}", fontsize=7)
        c, h, w = maps.shape
        row[0].set_ylabel(f"{stage.name}\n{c}×{h}×{w}", fontsize=8)
    figure.suptitle(f"Feature maps of {source}, each drawn at its size against the input's", fontsize=10)
    save_figure(figure, path)


def plot_attribution(image: torch.Tensor, gradient: torch.Tensor, occluded: torch.Tensor, title: str,
                     predicted: str, path: Path) -> None:
    """The image, its gradient saliency and its occlusion map, side by side."""
    from .plots import plt, save_figure, show_image

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.8), layout="constrained")
    show_image(axes[0], image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(gradient.numpy(), cmap="hot")
    axes[1].set_title(f"saliency: |∂ score({predicted}) / ∂ pixel|", fontsize=9)
    limit = float(occluded.abs().max()) or 1.0
    shown = axes[2].imshow(occluded.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2].set_title(f"occlusion: drop in p({predicted})\nwhen a black {PATCH}×{PATCH} patch covers the pixel",
                      fontsize=9)
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for axis in axes[1:]:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def describe_stages(explanation: Explanation) -> str:
    """``input 1×28×28 → conv2d + relu 32×28×28 → max_pooling2d 32×14×14``."""
    return " → ".join(f"{name} {'×'.join(map(str, shape))}" for name, shape in explanation.stages)
