"""A run's history: what one epoch measured, and ``history.csv``, the file that keeps it.

Standard library only: listing and comparing runs reads histories without PyTorch.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import CnnlabError
from .files import DAMAGED, atomic_write, read_bytes

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


@dataclass
class EpochResult:
    epoch: int  # counted from 1, as Keras prints it
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time of the epoch, validation included


def check_history(rows: list[EpochResult]) -> str | None:
    """What is wrong with ``rows``, or None: epochs 1, 2, 3…, accuracies in [0, 1], losses and times finite
    and not negative (training stops before a loss turns NaN, so no history it wrote holds one)."""
    for number, row in enumerate(rows, start=1):
        if row.epoch != number:
            return f"row {number} is epoch {row.epoch}"
        for name in HISTORY_FIELDS[1:]:
            value = getattr(row, name)
            if not (math.isfinite(value) and value >= 0 and (value <= 1 or "accuracy" not in name)):
                return f"epoch {number}'s {name} is {value}, " + (
                    "not a share from 0 to 1" if "accuracy" in name else "not a finite number ≥ 0")
    return None


def history_csv(history: list[EpochResult]) -> str:
    """history.csv's text: a header, then one row per epoch, six significant digits."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for row in history:
        writer.writerow([row.epoch] + [f"{getattr(row, k):.6g}" for k in HISTORY_FIELDS[1:]])
    return out.getvalue()


def write_history(path: Path, history: list[EpochResult]) -> None:
    atomic_write(path, history_csv(history))


def read_history(path: Path, within: Path | None = None) -> list[EpochResult]:
    """``history.csv``'s rows, checked (``check_history``); ``within``: the folder it must not lead out of."""
    try:
        text = read_bytes(path, within).decode()
        rows = [EpochResult(int(r["epoch"]), *(float(r[k]) for k in HISTORY_FIELDS[1:]))
                for r in csv.DictReader(io.StringIO(text, newline=""))]
    except (KeyError, TypeError, ValueError, csv.Error) as error:  # ValueError: bad numbers, bad UTF-8
        raise CnnlabError(f"{path}: malformed ({error!r}); {DAMAGED}") from None
    if problem := check_history(rows):
        raise CnnlabError(f"{path}: {problem}; {DAMAGED}")
    return rows
