"""A run's history: what one epoch measured, and ``history.csv``, the file that keeps it.

Standard library only: listing and comparing runs reads histories without PyTorch.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .errors import CnnlabError
from .files import atomic_write

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


@dataclass
class EpochResult:
    epoch: int  # counted from 1, as Keras prints it
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time of the epoch, validation included


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
