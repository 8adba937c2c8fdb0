"""What cnnlab's objects show in Jupyter: small HTML pieces — tables, figures inlined as PNG data URIs —
shared with the HTML report. No matplotlib until a figure is drawn."""
from __future__ import annotations

import base64
import errno
import html
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def plain_console(**options: Any):
    """A rich Console, but in Jupyter one that writes plain text as a script's print does: rich's own Jupyter
    output is HTML whose plain-text copy carries ANSI codes (and, for a progress bar, an emptied widget).

    When stdout's reader goes away (`cnnlab train … | head`) it falls silent and raises BrokenPipeError, as
    print does, for its caller to say what stopped; rich's own console exits the process, past every handler.
    Text is never read as rich's markup: a class or run named '[red]' is shown so, not hidden as a colour."""
    from rich.console import Console

    options.setdefault("markup", False)
    console = Console(**options)
    console = Console(**options, force_jupyter=False, force_terminal=False) if console.is_jupyter else console

    def on_broken_pipe() -> None:
        console.quiet = True
        stdout_gone()
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]
    return console


def stdout_gone() -> None:
    """Point stdout at /dev/null once its reader has gone away (`cnnlab … | head`): else Python's flush at exit
    complains of the broken pipe after cnnlab has said what stopped."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def escape(value: Any) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_tag(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def figure_tag(figure, alt: str) -> str:
    """A matplotlib figure as an inline <img>; the figure is closed."""
    from .plots import figure_png

    return png_tag(figure_png(figure), alt)


def history_html(history: Sequence[Any]) -> str:
    """The epochs as Keras printed them, then the accuracy and loss curves side by side."""
    from .plots import plot_curves

    rows = [(row.epoch, f"{row.seconds:.1f}s", f"{row.loss:.4f}", f"{row.accuracy:.4f}", f"{row.val_loss:.4f}",
             f"{row.val_accuracy:.4f}") for row in history]
    if not rows:
        return "<p>No epochs trained yet.</p>"
    curves = "".join(figure_tag(plot_curves(history, metric), f"{metric} per epoch") for metric in ("accuracy", "loss"))
    return (table(("epoch", "time", "loss", "accuracy", "val_loss", "val_accuracy"), rows)
            + f'<div style="display:flex;flex-wrap:wrap;gap:1em">{curves}</div>')


def run_html(run: Any) -> str:
    """A run folder at a glance: what was trained, the test metrics, the epochs and curves, the predictions."""
    info, metrics = run.info, run.metrics
    facts = [("recipe", run.recipe.name), ("model", info.model), ("data", info.dataset),
             ("input", "×".join(map(str, info.in_shape))), ("classes", len(info.classes))]
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss"),
                       ("best_val_accuracy", "best val accuracy"), ("best_epoch", "best epoch"),
                       ("train_seconds", "training seconds")):
        if metrics.get(key) is not None:
            value = metrics[key]
            facts.append((label, f"{value:.4f}" if isinstance(value, float) else value))
    predictions = run.read_figure("predictions.png")
    return (f"<h4>{escape(run.run_dir)}</h4>" + table(("", ""), facts) + history_html(run.history)
            + (png_tag(predictions, "three random test predictions") if predictions is not None else ""))

