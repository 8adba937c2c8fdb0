"""The course beside the learner: the figures the Keras labs printed (one table, from the course's own output),
the comparison each training lab shows after its test evaluation, and the check cells of the labs' exercises.

A check never raises: a learner's half-done exercise gets a sentence that says what is wrong, not a traceback.
Standard library only at import; a check imports torch when it looks at a model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .history import EpochResult


# ---------------------------------------------------------------------------------------------------------
# The course's figures (Keras 2 on TensorFlow, 10 epochs; a blank is a number the course did not print)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CourseResult:
    lab: int
    epochs: int
    accuracy: float  # training accuracy of the last epoch (the running mean over its batches)
    val_accuracy: float  # at the last epoch
    best_val_accuracy: float | None = None  # with best_epoch, where the best was not the last epoch
    best_epoch: int | None = None
    test_accuracy: float | None = None


COURSE: dict[str, CourseResult] = {  # keyed by the recipe that reproduces the lab
    "mnist-mlp": CourseResult(lab=2, epochs=10, accuracy=0.9201, val_accuracy=0.9183, test_accuracy=0.9224),
    "mnist-cnn": CourseResult(lab=3, epochs=10, accuracy=0.9475, val_accuracy=0.9433),
    "fashion-cnn": CourseResult(lab=4, epochs=10, accuracy=0.9368, val_accuracy=0.9191),
    "cifar10-cnn": CourseResult(lab=5, epochs=10, accuracy=0.7867, val_accuracy=0.6707, best_val_accuracy=0.6804,
                                best_epoch=9),
}


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class CourseComparison:
    """The course's numbers and this run's, row by row: HTML in Jupyter, a text table in a script."""

    title: str
    rows: list[tuple[str, str, str]]  # (measure, the course, this run)
    note: str

    def __str__(self) -> str:
        header = ("", "the course", "this run")
        widths = [max(len(row[i]) for row in (header, *self.rows)) for i in range(3)]
        lines = [f"{self.title}", *("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                                             for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
                                    for row in (header, *self.rows))]
        return "\n".join(lines + ([self.note] if self.note else []))

    __repr__ = __str__  # the plain-text copy of a notebook's output reads as the table

    def _repr_html_(self) -> str:
        from .display import escape, table

        return (f"<p><b>{escape(self.title)}</b></p>" + table(("", "the course", "this run"), self.rows)
                + (f"<p>{escape(self.note)}</p>" if self.note else ""))


def compare_with_course(recipe: Any, history: Sequence[EpochResult], scores: Any = None) -> CourseComparison:
    """The course's results for ``recipe``'s lab (a Recipe or its name) beside ``history`` (what ``fit``
    returned) and ``scores`` (what ``cnnlab.evaluate`` returned on the test set, a dict or a NamedTuple that
    answers ``scores["accuracy"]``)."""
    from .errors import CnnlabError

    name = getattr(recipe, "name", recipe)
    if name not in COURSE:
        raise CnnlabError(f"the course has no results for recipe {name!r}: it ran {', '.join(COURSE)}")
    if not history:
        raise CnnlabError("no epochs to compare with the course: pass the history fit returned")
    course, last = COURSE[name], history[-1]
    best = max(history, key=lambda row: row.val_accuracy)
    rows = [("epochs", str(course.epochs), str(last.epoch)),
            ("train accuracy, last epoch", _score(course.accuracy), _score(last.accuracy)),
            ("val accuracy, last epoch", _score(course.val_accuracy), _score(last.val_accuracy))]
    if course.best_epoch is not None or best is not last:
        course_best = (f"{_score(course.best_val_accuracy)} (epoch {course.best_epoch})"
                       if course.best_epoch is not None else "—")
        rows.append(("best val accuracy", course_best, f"{_score(best.val_accuracy)} (epoch {best.epoch})"))
    rows.append(("test accuracy", _score(course.test_accuracy), _score(None if scores is None else scores["accuracy"])))
    note = ("" if last.epoch == course.epochs else
            f"The course trained {course.epochs} epochs, this run {last.epoch}: set EPOCHS = {course.epochs} "
            "in the parameters cell to compare like with like.")
    return CourseComparison(f"Lab {course.lab} ({name}): the course's Keras run beside yours", rows, note)


# ---------------------------------------------------------------------------------------------------------
# Exercises: each check takes what the learner made and says whether it is the intended change
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'✓ Done' if self.passed else '✗ Not yet'}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from .display import escape

        colour = "#1a7f37" if self.passed else "#b35900"
        return f'<p style="color:{colour}"><b>{escape(str(self).split(":")[0])}</b>: {escape(self.message)}</p>'


def _count(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _layers(model: Any, kind: str) -> list[Any]:
    return [module for module in model.modules() if type(module).__name__ == kind]


def _guess(guess: Any, count: int, what: str) -> Check:
    if not isinstance(guess, int) or isinstance(guess, bool):
        return Check(False, f"write your prediction as a whole number, e.g. guess = 123456 (not {guess!r})")
    if guess != count:
        return Check(False, f"{what} has {count:,} parameters and you predicted {guess:,}: count each layer's "
                            "weights and biases (a dense layer: inputs × units + units; a convolution: "
                            "filters × (3 × 3 × channels in) + filters)")
    return Check(True, f"{what} has {count:,} parameters, as you predicted")


def _lab1_flatten_colour(flat: Any, rgb: Any) -> Check:
    shape = tuple(getattr(flat, "shape", ()))
    if shape != (32 * 32 * 3,):
        return Check(False, f"flat_colour has shape {shape}: a dense network takes one row of every number in the "
                            "image, 32 × 32 × 3 of them (reshape to (-1,) or (3072,))")
    if (flat != rgb.reshape(-1)).any():
        return Check(False, "flat_colour has 3,072 numbers but not in the image's order: reshape rgb itself")
    return Check(True, "3,072 numbers, red, green and blue of each pixel in turn")


def _lab2_hidden_units(model: Any, guess: Any) -> Check:
    dense = _layers(model, "Linear")
    if [layer.out_features for layer in dense[:1]] != [128]:
        return Check(False, f"the first dense layer has {dense[0].out_features if dense else 'no'} units: "
                            "build the model with 128")
    return _guess(guess, _count(model), "the 128-unit network")


def _lab3_filters(model: Any, guess: Any) -> Check:
    convolutions = _layers(model, "Conv2d")
    if [layer.out_channels for layer in convolutions[:1]] != [16]:
        return Check(False, f"the convolution has {convolutions[0].out_channels if convolutions else 'no'} "
                            "filters: build it with 16")
    return _guess(guess, _count(model), "the 16-filter network")


def _lab4_no_dropout(model: Any, history: Sequence[EpochResult], with_dropout: Sequence[EpochResult]) -> Check:
    dropouts = [layer for layer in _layers(model, "Dropout") if layer.p > 0]
    if dropouts:
        return Check(False, f"exercise_model still has a Dropout({dropouts[0].p}) layer: build lab 3's 'cnn', "
                            "which has none")
    if not history:
        return Check(False, "exercise_model has no dropout; now train it (the cell above the check)")

    epoch = min(len(history), len(with_dropout))  # the same epoch of both, though the exercise trains fewer

    def gap(rows: Sequence[EpochResult]) -> float:
        return rows[epoch - 1].accuracy - rows[epoch - 1].val_accuracy

    return Check(True, f"at epoch {epoch}, train accuracy minus validation accuracy is {gap(history):+.4f} "
                       f"without dropout and {gap(with_dropout):+.4f} with it; the wider that gap, the more the "
                       "network learnt the training images themselves (over-fitting)")


def _lab5_best_epoch(history: Sequence[EpochResult], guess: Any) -> Check:
    best = max(history, key=lambda row: row.val_accuracy)
    if guess != best.epoch:
        return Check(False, f"epoch {guess!r} is not where validation accuracy peaked: read the val accuracy "
                            "column of the history for its largest value")
    return Check(True, f"epoch {best.epoch} ({best.val_accuracy:.4f}); training past it bought training accuracy, "
                       "not validation accuracy")


EXERCISES: dict[str, Callable[..., Check]] = {
    "lab1-flatten-colour": _lab1_flatten_colour,
    "lab2-hidden-units": _lab2_hidden_units,
    "lab3-filters": _lab3_filters,
    "lab4-no-dropout": _lab4_no_dropout,
    "lab5-best-epoch": _lab5_best_epoch,
}


def check_exercise(name: str, **answers: Any) -> Check:
    """Whether the learner's answers to exercise ``name`` are the intended change; never raises."""
    if name not in EXERCISES:
        return Check(False, f"there is no exercise {name!r}; the labs have {', '.join(EXERCISES)}")
    try:
        return EXERCISES[name](**answers)
    except Exception as error:  # a learner's cell can hand over anything: say what, never a traceback
        return Check(False, f"could not check it ({type(error).__name__}: {error}); run the exercise's cells "
                            "above in order, then this one")
