"""Evaluation past one accuracy: per-class precision, recall and F1, the confusion matrix, the class pairs
most often confused and the worst mistakes — computed from a run's test set, written to ``RUN_DIR/evaluation/``.

(The module is ``evaluation``, not ``evaluate``: ``cnnlab.evaluate`` is the tutorial's loss-and-accuracy
function, and a submodule of the same name would replace it on the package.)
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data import ImageSet, data_fingerprint
from .device import Device, choose_device
from .errors import CnnlabError, hint, warn
from .files import atomic_write, make_folder, write_json
from .runs import EVALUATION, Run, load_run, load_test_set

if TYPE_CHECKING:
    from rich.table import Table

    from .recipes import Recipe

FOLDER = EVALUATION  # inside the run folder


# ---------------------------------------------------------------------------------------------------------
# The numbers
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassScore:
    name: str
    precision: float  # of the images predicted as this class, the share that are it (0 when none are)
    recall: float  # of the images of this class, the share found
    f1: float  # harmonic mean of the two (0 when both are 0)
    support: int  # test images of this class


@dataclass(frozen=True)
class Mistake:
    index: int  # into the test set
    label: int
    predicted: int
    probability: float  # the model's probability for the wrong class it chose


@dataclass
class Evaluation:
    classes: tuple[str, ...]
    loss: float
    accuracy: float
    confusion: torch.Tensor  # (K, K) int64 counts; row: true class, column: predicted class
    scores: list[ClassScore]
    confused: list[tuple[int, int, int]]  # (true, predicted, count), most frequent first
    mistakes: list[Mistake]  # most confident first
    test: ImageSet | None = None  # the images evaluated, when at hand: Jupyter then shows the worst mistakes

    def _repr_html_(self) -> str:  # Jupyter: test metrics, per-class scores, most confused, the matrix, mistakes
        from .display import escape, figure_tag, table

        scores = [(s.name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", s.support) for s in self.scores]
        confused = "".join(f"<li>{escape(line)}</li>" for line in describe_confused(self))
        return (f"<p>Test loss {self.loss:.4f} · test accuracy {self.accuracy:.4f} · macro F1 {self.macro_f1:.4f} · "
                f"weighted F1 {self.weighted_f1:.4f}</p>"
                + table(("class", "precision", "recall", "F1", "support"), scores)
                + (f"<p>Most confused (true → predicted):</p><ul>{confused}</ul>" if confused else "")
                + figure_tag(plot_confusion(self.confusion, self.classes), "confusion matrix")
                + (figure_tag(plot_mistakes(self.mistakes, self.test), "the worst mistakes")
                   if self.test is not None else ""))

    @property
    def macro_f1(self) -> float:
        return sum(s.f1 for s in self.scores) / len(self.scores)

    @property
    def weighted_f1(self) -> float:
        return sum(s.f1 * s.support for s in self.scores) / max(1, sum(s.support for s in self.scores))


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: entry [i, j] is how many images of class i were predicted as class j."""
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes,
                                                                                                num_classes)


def class_scores(confusion: torch.Tensor, classes: Sequence[str]) -> list[ClassScore]:
    hits = confusion.diag().double()
    predicted, actual = confusion.sum(dim=0).double(), confusion.sum(dim=1).double()
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, hits / actual.clamp(min=1), 0.0)
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-12), 0.0)
    return [ClassScore(name, p, r, f, int(n)) for name, p, r, f, n in
            zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), actual.tolist())]


def most_confused(confusion: torch.Tensor, count: int = 5) -> list[tuple[int, int, int]]:
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().sort(descending=True, stable=True)
    k = len(confusion)
    return [(i // k, i % k, n) for i, n in zip(flat[:count].tolist(), counts[:count].tolist()) if n > 0]


def worst_mistakes(probabilities: torch.Tensor, labels: torch.Tensor, count: int = 16) -> list[Mistake]:
    """The wrong predictions the model was surest of."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].sort(descending=True, stable=True).indices][:count]
    return [Mistake(i, int(labels[i]), int(predicted[i]), float(confidence[i])) for i in order.tolist()]


def analyse(run: Run | torch.nn.Module, test: ImageSet, device: Device = None, recipe: Recipe | None = None
            ) -> Evaluation:
    """Everything `cnnlab evaluate` reports, for ``run``'s model on ``test``, on ``device`` (None: where it is).

    ``run``: a run, or a network still in memory (a lab's) with the ``recipe`` it was trained with."""
    from .inference import evaluate
    from .prediction import predict_proba

    if isinstance(run, Run) and tuple(test.classes) != tuple(run.info.classes):
        raise CnnlabError(f"{run.run_dir}: trained on classes {', '.join(run.info.classes)} but the test data has "
                          f"{', '.join(test.classes)}; evaluate it on the data it was trained for")
    metrics = evaluate(run, test, recipe, device)  # the tutorial's numbers, as training printed them
    probabilities = predict_proba(run, test.images, device)
    confusion = confusion_matrix(test.labels, probabilities.argmax(dim=1), len(test.classes))
    return Evaluation(test.classes, metrics["loss"], metrics["accuracy"], confusion,
                      class_scores(confusion, test.classes), most_confused(confusion),
                      worst_mistakes(probabilities, test.labels), test)


# ---------------------------------------------------------------------------------------------------------
# Files: CSV and JSON for programs, PNG for people
# ---------------------------------------------------------------------------------------------------------
def _csv(rows: list[list]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def save_evaluation(evaluation: Evaluation, test: ImageSet, folder: Path) -> list[Path]:
    """Write the tables and figures into ``folder``; the paths written."""
    make_folder(folder)
    classes, confusion = evaluation.classes, evaluation.confusion
    normalised = normalise_rows(confusion)
    tables = {
        "per_class.csv": [["class", "precision", "recall", "f1", "support"]] +
                         [[s.name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", s.support]
                          for s in evaluation.scores],
        "confusion_counts.csv": [["true \\ predicted", *classes]] +
                                [[name, *row] for name, row in zip(classes, confusion.tolist())],
        "confusion_normalized.csv": [["true \\ predicted", *classes]] +
                                    [[name, *(f"{v:.4f}" for v in row)]
                                     for name, row in zip(classes, normalised.tolist())],
        "confused_pairs.csv": [["true", "predicted", "count"]] +
                              [[classes[t], classes[p], n] for t, p, n in evaluation.confused],
        "mistakes.csv": [["index", "true", "predicted", "probability"]] +
                        [[m.index, classes[m.label], classes[m.predicted], f"{m.probability:.4f}"]
                         for m in evaluation.mistakes],
    }
    paths = []
    for name, rows in tables.items():
        atomic_write(folder / name, _csv(rows))
        paths.append(folder / name)
    write_json(folder / "metrics.json", {
        "test_loss": evaluation.loss, "test_accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1, "weighted_f1": evaluation.weighted_f1,
        "per_class": {s.name: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                      for s in evaluation.scores},
    })
    plot_confusion(confusion, classes, folder / "confusion.png")
    plot_mistakes(evaluation.mistakes, test, folder / "mistakes.png")
    return paths + [folder / "metrics.json", folder / "confusion.png", folder / "mistakes.png"]


def evaluate_run(run: Run | str | os.PathLike, data_dir: str | os.PathLike | None = None, device: Device = None,
                 test: ImageSet | None = None) -> tuple[Evaluation, list[Path]]:
    """`cnnlab evaluate`: reload a run, evaluate it on its test set (``test``, else ``load_test_set``'s), write
    ``RUN_DIR/evaluation/``. Test images other than those the run was tested on when trained (``Run.test_data``)
    are scored all the same, with a one-line warning.

    ``device``: None is 'auto' for a run folder this function loads, where the model is for a Run given."""
    own = not isinstance(run, Run)
    run = load_run(run)
    test = test if test is not None else load_test_set(run, data_dir)
    if run.test_data is not None and data_fingerprint(test) != run.test_data:
        warn(f"these {len(test):,} test images are not the ones {run.run_dir} was tested on when it was trained, so "
             f"its scores here are for other data (another data set, or another version of it, in "
             f"{hint(cli='--data-dir', python='data_dir')}?)")
    if own:
        run.model.to(choose_device(device))  # the run is this function's own
    evaluation = analyse(run, test, None if own else device)
    run.remove_stale_temp()  # what a killed evaluation left
    return evaluation, save_evaluation(evaluation, test, run.run_dir / FOLDER)


# ---------------------------------------------------------------------------------------------------------
# Figures and the printed table
# ---------------------------------------------------------------------------------------------------------
def normalise_rows(confusion: torch.Tensor) -> torch.Tensor:
    """Each row as shares of its true class."""
    return confusion.double() / confusion.sum(dim=1, keepdim=True).clamp(min=1)


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], path: Path | None = None):
    """Counts and row-normalised shares side by side, each cell labelled while the classes are few; the figure,
    written to ``path`` when one is given."""
    from .plots import finish_figure, plt

    normalised = normalise_rows(confusion)
    k = len(classes)
    size = max(4.5, 0.45 * k + 1.5)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), layout="constrained")
    for axis, values, title, text in ((axes[0], confusion.numpy(), "Confusion matrix (counts)", "{:.0f}"),
                                      (axes[1], normalised.numpy(), "Normalised by true class", "{:.2f}")):
        image = axis.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(title)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        axis.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(k), classes, fontsize=8)
        if k <= 20:
            threshold = values.max() / 2
            for i in range(k):
                for j in range(k):
                    axis.text(j, i, text.format(values[i, j]), ha="center", va="center", fontsize=7,
                              color="white" if values[i, j] > threshold else "black")
    return finish_figure(figure, path)


def plot_mistakes(mistakes: list[Mistake], test: ImageSet, path: Path | None = None, columns: int = 8):
    """The worst mistakes as a gallery: image, true class, predicted class and its probability; the figure,
    written to ``path`` when one is given."""
    from .plots import finish_figure, plt, show_image

    rows = max(1, -(-len(mistakes) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.3 * rows), squeeze=False,
                              layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, mistake in zip(axes.flat, mistakes):
        show_image(axis, test.images[mistake.index])
        axis.axis("on")
        axis.set_title(f"#{mistake.index}\ntrue: {test.classes[mistake.label]}\n"
                       f"pred: {test.classes[mistake.predicted]} ({mistake.probability:.0%})", fontsize=7)
    if not mistakes:
        axes[0, 0].text(0, 0.5, "No mistakes on the test set.", fontsize=11)
    figure.suptitle("Worst mistakes: wrong predictions the model was surest of", fontsize=10)
    return finish_figure(figure, path)


def format_scores(evaluation: Evaluation) -> Table:
    """Per-class precision, recall and F1 with support, then the macro and weighted F1."""
    from rich.table import Table

    table = Table("class", "precision", "recall", "F1", "support", title_justify="left")
    for s in evaluation.scores:
        table.add_row(s.name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", str(s.support))
    table.caption = f"macro F1 {evaluation.macro_f1:.4f} - weighted F1 {evaluation.weighted_f1:.4f}"
    table.caption_justify = "left"
    return table


def describe_confused(evaluation: Evaluation) -> list[str]:
    """One line per most-confused pair: ``Shirt → T-shirt/top: 112 (11.2% of Shirt)``."""
    totals = evaluation.confusion.sum(dim=1).tolist()
    return [f"{evaluation.classes[t]} → {evaluation.classes[p]}: {n} ({n / totals[t]:.1%} of {evaluation.classes[t]})"
            for t, p, n in evaluation.confused]
