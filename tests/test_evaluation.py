"""`cnnlab evaluate`: per-class scores, the confusion matrix, confused pairs and worst mistakes."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.evaluation import class_scores, confusion_matrix, most_confused, normalise_rows, worst_mistakes
from helpers import learnable_images, make_idx_dataset, write_idx

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
PREDICTED = torch.tensor([0, 1, 1, 1, 0, 2])


def test_confusion_and_scores_by_hand():
    confusion = confusion_matrix(LABELS, PREDICTED, 4)  # class 3: never seen, never predicted
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    scores = class_scores(confusion, ("a", "b", "c", "d"))
    assert [s.name for s in scores] == ["a", "b", "c", "d"]
    assert [s.precision for s in scores] == pytest.approx([1 / 2, 2 / 3, 1, 0])
    assert [s.recall for s in scores] == pytest.approx([1 / 2, 1, 1 / 2, 0])
    assert [s.f1 for s in scores] == pytest.approx([1 / 2, 0.8, 2 / 3, 0])
    assert [s.support for s in scores] == [2, 2, 2, 0]
    assert most_confused(confusion) == [(0, 1, 1), (2, 0, 1)]  # true→predicted, off the diagonal only
    assert normalise_rows(confusion).tolist() == [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0]]


def test_worst_mistakes_are_the_most_confident_wrong_ones():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95], [0.7, 0.3]])
    labels = torch.tensor([0, 0, 1, 0, 0])  # wrong: #1 (0.8), #2 (0.6), #3 (0.95)
    mistakes = worst_mistakes(probabilities, labels, count=2)
    assert [(m.index, m.label, m.predicted) for m in mistakes] == [(3, 0, 1), (1, 0, 1)]
    assert mistakes[0].probability == pytest.approx(0.95)


def test_evaluate_writes_its_files_and_keeps_the_tutorial_line(trained_runs, tmp_path, capsys):
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert cli.main(["evaluate", str(run_dir), "--data-dir", str(trained_runs["data"]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Test loss: {metrics['test_loss']:.4f} - test accuracy: {metrics['test_accuracy']:.4f}"
    assert "precision" in out[1] + out[2] and any(line.startswith("Wrote 8 files") for line in out)
    assert capsys.readouterr().err == ""  # the images it was tested on: nothing to warn of

    folder = run_dir / "evaluation"
    with open(folder / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list("0123456789")
    assert sum(int(r["support"]) for r in rows) == 60  # the fake test set
    with open(folder / "confusion_counts.csv") as f:
        counts = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert sum(map(sum, counts)) == 60
    assert sum(counts[i][i] for i in range(10)) / 60 == pytest.approx(metrics["test_accuracy"])
    with open(folder / "confusion_normalized.csv") as f:
        shares = [[float(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert all(sum(row) == pytest.approx(1, abs=1e-3) for row in shares)
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and set(saved["per_class"]) == set("0123456789")
    for name in ("confusion.png", "mistakes.png"):
        with Image.open(folder / name) as image:
            assert image.width > 400 and image.height > 150


def test_evaluate_says_when_the_test_images_are_not_those_the_run_was_tested_on(trained_runs, tmp_path, capsys):
    """Another data set under the same file names (Fashion-MNIST for an MNIST run) scores without an error: the
    scores are real, but for other images, and a line says so."""
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    other = make_idx_dataset(tmp_path / "other", seed=1)
    assert cli.main(["evaluate", str(run_dir), "--data-dir", str(other), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: warning: these 60 test images are not the ones {run_dir} was tested on") and \
        "--data-dir" in err and len(err.splitlines()) == 1


def test_evaluate_refuses_test_data_with_other_classes(trained_runs, tmp_path, capsys):
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    info = json.loads((run_dir / "model.json").read_text())
    (run_dir / "model.json").write_text(json.dumps({**info, "classes": list("abcdefghij")}))
    code = cli.main(["evaluate", str(run_dir), "--data-dir", str(trained_runs["data"]), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "trained on classes a, b" in err and "Traceback" not in err


def test_f1_averages_confused_pairs_and_mistakes_are_what_the_network_computes(digit_run, fake_mnist, capsys):
    """An untrained network on the fake digits: many mistakes. Every figure is recomputed here from a plain
    forward pass and compared with what `cnnlab evaluate` wrote."""
    from cnnlab.data import load_dataset
    from cnnlab.runs import load_run

    labels = np.array([0] * 20 + [1] * 12 + [d for d in range(2, 10) for _ in range(d % 3 + 2)])  # uneven support
    write_idx(fake_mnist / "t10k-images-idx3-ubyte.gz",
              learnable_images(labels, (1, 28, 28), np.random.default_rng(3))[:, 0])
    write_idx(fake_mnist / "t10k-labels-idx1-ubyte.gz", labels)
    assert cli.main(["evaluate", str(digit_run), "--data-dir", str(fake_mnist), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    folder = digit_run / "evaluation"
    _, test = load_dataset("mnist", fake_mnist)
    with torch.no_grad():
        probabilities = torch.softmax(load_run(digit_run).model(test.images.float() / 255), dim=1)
    predicted = probabilities.argmax(dim=1)
    pairs = {}
    for label, guess in zip(test.labels.tolist(), predicted.tolist()):
        pairs[(label, guess)] = pairs.get((label, guess), 0) + 1
    f1 = {}
    for k in range(10):  # F1 = 2·TP / (2·TP + FP + FN), 0 for a class neither present nor predicted
        hits = pairs.get((k, k), 0)
        wrong = sum(n for (label, guess), n in pairs.items() if (label == k) != (guess == k))
        f1[k] = 2 * hits / (2 * hits + wrong) if hits + wrong else 0.0
    support = {k: int((test.labels == k).sum()) for k in range(10)}
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["macro_f1"] == pytest.approx(sum(f1.values()) / 10)
    assert saved["weighted_f1"] == pytest.approx(sum(f1[k] * support[k] for k in range(10)) / len(test))
    assert saved["macro_f1"] != pytest.approx(saved["weighted_f1"])  # uneven support: the two averages differ
    assert f"macro F1 {saved['macro_f1']:.4f} - weighted F1 {saved['weighted_f1']:.4f}" in out

    confused = sorted(((n, label, guess) for (label, guess), n in pairs.items() if label != guess),
                      key=lambda entry: -entry[0])
    with open(folder / "confused_pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == min(5, len(confused)) and len(rows) >= 2
    counts = [int(row["count"]) for row in rows]
    assert counts == [n for n, _, _ in confused[:len(rows)]]  # the most frequent first
    assert all(pairs[(int(row["true"]), int(row["predicted"]))] == int(row["count"]) for row in rows)

    wrong = (predicted != test.labels).nonzero().flatten()
    surest = wrong[probabilities.max(dim=1).values[wrong].argsort(descending=True)][:16]
    with open(folder / "mistakes.csv") as f:
        mistakes = list(csv.DictReader(f))
    assert [int(row["index"]) for row in mistakes] == surest.tolist()
    for row in mistakes:
        index = int(row["index"])
        assert int(row["true"]) == test.labels[index]
        assert int(row["predicted"]) == predicted[index] != test.labels[index]
        assert float(row["probability"]) == pytest.approx(probabilities[index].max().item(), abs=5e-5)
