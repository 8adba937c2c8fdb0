"""One self-contained HTML page per run: recipe, model, curves, test metrics, per-class scores, confusion
matrix, mistakes, predictions and what the network sees. Every figure is embedded as a data URI and the
page's Content-Security-Policy forbids fetching anything, so it opens the same offline, mailed or archived.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .display import escape, png_tag, table
from .files import atomic_write
from .runs import Run, load_run, load_test_set

if TYPE_CHECKING:
    from .device import Device
    from .evaluation import Evaluation
    from .explain import Explanation

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.muted { color: #666; } img { max-width: 100%; display: block; margin: .6em 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .25em .7em; text-align: left; } th { background: #f4f4f6; }
td { font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; }
.card b { display: block; font-size: 1.5em; }
"""


def _figure(run: Run, name: str, alt: str) -> str:
    """A PNG of the run folder inlined as a data URI, or a note where the folder lacks it."""
    data = run.read_figure(name)
    if data is None:
        return f'<p class="muted">({escape(Path(name).name)} is not in the run folder.)</p>'
    return png_tag(data, alt)


def _started_from(run: Run) -> str:
    """Where the network started, for a run trained from another's layers (`cnnlab train --from RUN`)."""
    start = run.started_from
    if start is None:
        return ""
    return (f"<br>started from {escape(start['run'])} ({escape(start['path'])}): "
            f"{escape(', '.join(start['layers']))} taken, the output layer new")


def _card(label: str, value: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b>{escape(label)}</div>'


def write_report(run: Run | str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 device: Device = None) -> Path:
    """`cnnlab report`: evaluate the run and explain its first test image, then write ``RUN_DIR/report.html``.

    ``device``: None is 'auto' for a run folder this function loads, where the model is for a Run given."""
    from .device import choose_device
    from .evaluation import evaluate_run
    from .explain import FOLDER as EXPLAIN_FOLDER
    from .explain import explain_image

    own = not isinstance(run, Run)
    run = load_run(run)
    test = load_test_set(run, data_dir)
    if own:
        run.model.to(choose_device(device))  # the run is this function's own
    evaluation, _ = evaluate_run(run, device=None if own else device, test=test)
    explanation = explain_image(run, test.images[0], run.run_dir / EXPLAIN_FOLDER, "test image #0",
                                test.classes[int(test.labels[0])])
    path = run.run_dir / "report.html"
    atomic_write(path, _page(run, evaluation, len(test), explanation))
    return path


def _cards(run: Run, evaluation: Evaluation) -> str:
    """The headline numbers: the test metrics, the best validation accuracy, the training time, the size."""
    from .models import count_params

    metrics = run.metrics
    cards = [_card("test accuracy", f"{evaluation.accuracy:.4f}"), _card("test loss", f"{evaluation.loss:.4f}"),
             _card("macro F1", f"{evaluation.macro_f1:.4f}")]
    if "best_val_accuracy" in metrics:
        cards.append(_card(f"best validation accuracy (epoch {metrics.get('best_epoch', '?')})",
                           f"{metrics['best_val_accuracy']:.4f}"))
    if "train_seconds" in metrics:
        cards.append(_card(f"training time, {metrics.get('epochs', '?')} epochs", f"{metrics['train_seconds']:.1f} s"))
    cards.append(_card("parameters", f"{count_params(run.model):,}"))
    return f'<div class="cards">{"".join(cards)}</div>'


def _page(run: Run, evaluation: Evaluation, tested: int, explanation: Explanation) -> str:
    """The report's HTML: a header, then one section per part of the run."""
    from .evaluation import FOLDER, describe_confused
    from .explain import describe_stages
    from .models import summarize

    environment, recipe, name = run.environment, run.recipe, escape(run.run_dir.name)
    scores = table(["class", "precision", "recall", "F1", "support"],
                   [(s.name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", s.support)
                    for s in evaluation.scores] +
                   [("macro average", "", "", f"{evaluation.macro_f1:.4f}", tested),
                    ("weighted average", "", "", f"{evaluation.weighted_f1:.4f}", tested)])
    confused = "".join(f"<li>{escape(line)}</li>" for line in describe_confused(evaluation)) or "<li>none</li>"
    sees = "".join(_figure(run, path.relative_to(run.run_dir).as_posix(), path.stem) for path in explanation.files)
    sections = {
        "Test metrics": f"<p>On the {tested:,} test images:</p>{_cards(run, evaluation)}",
        "Learning curves": _figure(run, "accuracy.png", "accuracy per epoch") + _figure(run, "loss.png",
                                                                                        "loss per epoch"),
        "Per-class scores": f"{scores}\n<p>Most confused (true → predicted):</p><ul>{confused}</ul>",
        "Confusion matrix": _figure(run, f"{FOLDER}/confusion.png", "confusion matrix"),
        "Worst mistakes": _figure(run, f"{FOLDER}/mistakes.png", "worst mistakes"),
        "Predictions": ("<p>Three random test images, as the tutorial shows them after training, and the "
                        "training sample it shows before.</p>\n" + _figure(run, "predictions.png", "predictions")
                        + _figure(run, "sample.png", "training sample")),
        "What the network sees": f"<p>{escape(explanation.source)}: predicted {escape(explanation.predicted)} "
                                 f"({explanation.probability:.1%}),\ntrue {escape(explanation.label)}. Shapes "
                                 f"through the network: {escape(describe_stages(explanation))}.</p>\n"
                                 + "".join(f"<p>{escape(note)}</p>" for note in explanation.notes) + sees,
        "Model": summarize(run.model, run.info.in_shape)._repr_html_(),  # the table, then the total
        "Recipe": table(["field", "value"], recipe.to_dict().items()),
        "Environment": table(["", ""], environment.items()),
    }
    when, trained_on = environment.get("created", ""), f"{environment.get('device', '?')} " \
                                                       f"{environment.get('device_name', '')}"
    body = "\n\n".join(f"<h2>{escape(title)}</h2>\n{html}" for title, html in sections.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} — cnnlab report</title><style>{STYLE}</style></head><body>
<h1>{name}</h1>
<p class="muted">{escape(recipe.description or recipe.name)}<br>
{escape(run.info.dataset)} · model {escape(run.info.model)} · trained on {escape(trained_on)}
{('· ' + escape(when)) if when else ''}{_started_from(run)}</p>

{body}
<p class="muted">Written by cnnlab from {escape(run.run_dir)}.</p>
</body></html>
"""
