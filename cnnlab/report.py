"""One self-contained HTML page per run: recipe, model, curves, test metrics, per-class scores, confusion
matrix, mistakes, predictions and what the network sees. Every figure is embedded as a data URI and the
page's Content-Security-Policy forbids fetching anything, so it opens the same offline, mailed or archived.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .display import escape, png_tag, table
from .files import atomic_write, read_json
from .runs import load_run, load_test_set

if TYPE_CHECKING:
    from .device import Device

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


def _figure(path: Path, alt: str) -> str:
    """A PNG inlined as a data URI, or a note where the run folder lacks it."""
    if not path.is_file():
        return f'<p class="muted">({escape(path.name)} is not in the run folder.)</p>'
    return png_tag(path.read_bytes(), alt)


def _card(label: str, value: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b>{escape(label)}</div>'


def write_report(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 device: Device = None) -> Path:
    """`cnnlab report`: evaluate the run and explain its first test image, then write ``RUN_DIR/report.html``."""
    from .device import choose_device
    from .evaluation import FOLDER, analyse, describe_confused, save_evaluation
    from .explain import FOLDER as EXPLAIN_FOLDER
    from .explain import describe_stages, explain_image
    from .models import count_params, summarize

    run = load_run(run_dir)
    run_dir = run.run_dir
    test = load_test_set(run, data_dir)
    run.model.to(choose_device(device))  # the run is this function's own: None is 'auto'
    evaluation = analyse(run, test)
    save_evaluation(evaluation, test, run_dir / FOLDER)
    explanation = explain_image(run, test.images[0], run_dir / EXPLAIN_FOLDER, "test image #0",
                                test.classes[int(test.labels[0])])
    environment = read_json(run_dir / "environment.json") if (run_dir / "environment.json").is_file() else {}
    metrics, recipe = run.metrics, run.recipe

    cards = [_card("test accuracy", f"{evaluation.accuracy:.4f}"), _card("test loss", f"{evaluation.loss:.4f}"),
             _card("macro F1", f"{evaluation.macro_f1:.4f}")]
    if "best_val_accuracy" in metrics:
        cards.append(_card(f"best validation accuracy (epoch {metrics['best_epoch']})",
                           f"{metrics['best_val_accuracy']:.4f}"))
    if "train_seconds" in metrics:
        cards.append(_card(f"training time, {metrics['epochs']} epochs", f"{metrics['train_seconds']:.1f} s"))
    cards.append(_card("parameters", f"{count_params(run.model):,}"))

    per_class = table(["class", "precision", "recall", "F1", "support"],
                      [(s.name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", s.support)
                       for s in evaluation.scores] +
                      [("macro average", "", "", f"{evaluation.macro_f1:.4f}", len(test)),
                       ("weighted average", "", "", f"{evaluation.weighted_f1:.4f}", len(test))])
    confused = "".join(f"<li>{escape(line)}</li>" for line in describe_confused(evaluation)) or "<li>none</li>"
    summary = summarize(run.model, run.info.in_shape)._repr_html_()  # the table, then the total
    sees = "".join(_figure(path, path.stem) for path in explanation.files)
    notes = "".join(f"<p>{escape(note)}</p>" for note in explanation.notes)
    when = environment.get("created", "")

    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(run_dir.name)} — cnnlab report</title><style>{STYLE}</style></head><body>
<h1>{escape(run_dir.name)}</h1>
<p class="muted">{escape(recipe.description or recipe.name)}<br>
{escape(run.info.dataset)} · model {escape(run.info.model)} · trained on {escape(environment.get('device', '?'))}
{escape(environment.get('device_name', ''))} {('· ' + escape(when)) if when else ''}</p>

<h2>Test metrics</h2>
<p>On the {len(test):,} test images:</p><div class="cards">{''.join(cards)}</div>

<h2>Learning curves</h2>
{_figure(run_dir / 'accuracy.png', 'accuracy per epoch')}{_figure(run_dir / 'loss.png', 'loss per epoch')}

<h2>Per-class scores</h2>
{per_class}
<p>Most confused (true → predicted):</p><ul>{confused}</ul>

<h2>Confusion matrix</h2>
{_figure(run_dir / FOLDER / 'confusion.png', 'confusion matrix')}

<h2>Worst mistakes</h2>
{_figure(run_dir / FOLDER / 'mistakes.png', 'worst mistakes')}

<h2>Predictions</h2>
<p>Three random test images, as the tutorial shows them after training, and the training sample it shows before.</p>
{_figure(run_dir / 'predictions.png', 'predictions')}{_figure(run_dir / 'sample.png', 'training sample')}

<h2>What the network sees</h2>
<p>{escape(explanation.source)}: predicted {escape(explanation.predicted)} ({explanation.probability:.1%}),
true {escape(explanation.label)}. Shapes through the network: {escape(describe_stages(explanation))}.</p>
{notes}{sees}

<h2>Model</h2>
{summary}

<h2>Recipe</h2>
{table(['field', 'value'], recipe.to_dict().items())}

<h2>Environment</h2>
{table(['', ''], environment.items())}
<p class="muted">Written by cnnlab from {escape(run_dir)}.</p>
</body></html>
"""
    atomic_write(run_dir / "report.html", page)
    return run_dir / "report.html"
