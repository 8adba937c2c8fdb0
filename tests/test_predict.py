"""Predicting your own files with a run, training on a folder of them, and the photographed-digits acceptance test."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli, images
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.prediction import predict, predict_files
from cnnlab.runs import load_run
from helpers import MNIST_SAMPLE, RUN_FILES, learnable_images
from test_images import BAD_FILES


def write_digits(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i, image in enumerate(learnable_images(np.arange(n) % 10, (1, 28, 28), rng)):
        paths.append(folder / f"digit{i}.png")
        Image.fromarray(image[0]).save(paths[-1])
    return paths


def predict_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_prints_the_top_classes(digit_run, tmp_path, capsys):
    paths = write_digits(tmp_path / "mine", 2)
    code, out, err = predict_cli(capsys, digit_run, *paths, "--top", "3")
    assert code == 0 and err == ""
    run = load_run(digit_run)
    lines = out.splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, paths):
        # What the network computes for the file, by a plain forward pass here: the printed top 3 are those.
        image = images.prepare_file(path, run.info.preprocess, run.info.in_shape)
        with torch.no_grad():
            probabilities = torch.softmax(run.model(image[None].float() / 255), dim=1)[0]
        order = probabilities.argsort(descending=True)[:3]
        head, _, shown = line.partition(": ")
        printed = [entry.split(" ") for entry in shown.split("  ")]
        assert head == str(path)
        assert [label for label, _ in printed] == [run.info.classes[i] for i in order]
        percents = [float(percent.rstrip("%")) for _, percent in printed]
        assert percents == sorted(percents, reverse=True)
        assert percents == pytest.approx([100 * probabilities[i].item() for i in order], abs=0.051)  # shown to 0.1


def test_predict_json_and_figures_show_what_the_network_received(digit_run, tmp_path, capsys):
    paths = write_digits(tmp_path / "mine", 3) + write_digits(tmp_path / "theirs", 1)  # two called digit0.png
    code, out, _ = predict_cli(capsys, digit_run, *paths, "--json", "--top", "10", "--save", tmp_path / "figs")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    run = load_run(digit_run)
    for record, path, item in zip(records, paths, predict_files(run, paths)):
        assert record["path"] == str(path) and record["label"] == str(record["class"])
        assert sum(top["probability"] for top in record["top"]) == pytest.approx(1.0, abs=1e-4)
        assert record["class"] == int(item.probabilities.argmax())
        assert torch.equal(item.image, images.prepare_file(path, "digit", (1, 28, 28)))  # the stored preprocessing
    assert len(records) == 4
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["digit0-2.png", "digit0.png", "digit1.png",
                                                                     "digit2.png"]


def test_predict_goes_on_past_every_kind_of_bad_file(digit_run, tmp_path, capsys):
    good = write_digits(tmp_path / "mine", 2)
    bad = [write(tmp_path) for write, _ in BAD_FILES.values()]
    code, out, err = predict_cli(capsys, digit_run, good[0], *bad, good[1], "--json")
    assert code == 1 and f"{len(bad)} of {len(bad) + 2} image(s) could not be used" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in [good[0], *bad, good[1]]]  # every file, in order
    assert all("class" in r for r in (records[0], records[-1]))
    for record, (_, message) in zip(records[1:-1], BAD_FILES.values()):
        assert message in record["error"]

    code, out, err = predict_cli(capsys, digit_run, bad[2], good[0])  # plain text: errors on stderr
    assert code == 1 and out.startswith(str(good[0])) and "not an image Pillow can read" in err


@pytest.mark.slow
def test_thousands_of_paths_at_once(digit_run, tmp_path, capsys):
    source = write_digits(tmp_path / "one", 1)[0].read_bytes()
    folder = tmp_path / "many"
    folder.mkdir()
    paths = []
    for i in range(3000):
        paths.append(folder / f"{i:04d}.png")
        paths[-1].write_bytes(source if i % 500 else b"broken")  # every 500th is not an image
    open_before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else 0
    code, out, err = predict_cli(capsys, digit_run, *paths, "--json")
    assert code == 1 and "6 of 3000 image(s) could not be used" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3000 and sum("error" in r for r in records) == 6
    assert len({r["class"] for r in records if "class" in r}) == 1  # the same picture: the same answer
    if open_before:
        assert len(os.listdir("/proc/self/fd")) <= open_before + 2  # no file left open


def test_random_test_predictions_as_the_tutorial_shows_them(trained_runs, tmp_path, capsys):
    """The tutorial's step 10: random test images, each with its true label and the network's prediction."""
    run_dir, data = trained_runs["mlp"], trained_runs["data"]
    code, out, _ = predict_cli(capsys, run_dir, "--random", "12", "--data-dir", data, "--seed", "1",
                               "--save", tmp_path / "figs")
    assert code == 0
    # The images --seed 1 picks, and what the trained network makes of them, computed here.
    _, test = load_dataset("mnist", data)
    picks = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:12]
    with torch.no_grad():
        predicted = load_run(run_dir).model(test.images[picks].float() / 255).argmax(dim=1)
    assert len(set(predicted.tolist())) > 1  # varied enough that a mix-up would show
    expected = [(int(label), int(guess)) for label, guess in zip(test.labels[picks], predicted)]
    assert out.splitlines() == [f"Label value = [{label}]  Predicted value = [{guess}]" for label, guess in expected]
    assert (tmp_path / "figs" / "random-predictions.png").is_file()
    assert predict_cli(capsys, run_dir, "--random", "12", "--data-dir", data, "--seed", "1")[1] == out

    code, out, _ = predict_cli(capsys, run_dir, "--random", "12", "--data-dir", data, "--seed", "1", "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"label": label, "class": guess, "correct": label == guess} for label, guess in expected]


@pytest.mark.parametrize("args, message", [
    ([], "give IMAGE files or --random N"),
    (["x.png", "--random", "3"], "give IMAGE files or --random N"),
    (["x.png", "--top", "0"], "--top must be at least 1"),
])
def test_predict_usage_errors(digit_run, args, message, capsys):
    code, _, err = predict_cli(capsys, digit_run, *args)
    assert code == 2 and message in err


# ---------------------------------------------------------------------------------------------------------
# Training on a folder
# ---------------------------------------------------------------------------------------------------------
CLASSES = ("cat", "dog", "owl")


def write_class_folders(root: Path, per_class: int, size: tuple[int, int], mode: str, seed: int = 0) -> Path:
    """One sub-folder per class of learnable images (a bright block whose place is the class)."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(learnable_images(np.full(per_class, label), (channels, *size), rng)):
            array = image[0] if channels == 1 else image.transpose(1, 2, 0)
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


def train_folder(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["train", *map(str, args), "--epochs", "3", "--batch-size", "16", "--device", "cpu", "--quiet"])
    out, err = capsys.readouterr()
    return code, out.strip(), err


def test_train_on_a_folder_of_class_folders(tmp_path, runs_dir, capsys):
    data = write_class_folders(tmp_path / "pets", 20, (16, 16), "RGB")
    truncated = data / "dog" / "broken.png"
    truncated.write_bytes((data / "dog" / "0.png").read_bytes()[:60])
    (data / "owl" / "notes.txt").write_text("not an image by name: ignored")
    code, out, err = train_folder(capsys, "--data", data, "--model", "cnn", "--runs-dir", runs_dir)
    assert code == 0 and f"cnnlab: warning: skipped {truncated}:" in err
    run_dir = Path(out)
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    info = json.loads((run_dir / "model.json").read_text())
    assert info["dataset"] == "folder" and info["in_shape"] == [3, 16, 16] and info["classes"] == list(CLASSES)
    assert info["preprocess"] == "crop"
    assert json.loads((run_dir / "environment.json").read_text())["data_dir"] == str(data.resolve())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] is None and metrics["best_val_accuracy"] > 0.5  # 12 validation images
    assert json.loads((run_dir / "recipe.json").read_text())["val_fraction"] == 0.2

    assert cli.main(["evaluate", str(run_dir)]) == 1
    assert "has no test/ folder" in capsys.readouterr().err
    code, out, _ = predict_cli(capsys, run_dir, data / "owl" / "3.png", "--json")
    assert code == 0 and json.loads(out)["label"] in CLASSES

    code, _, err = train_folder(capsys, "--data", data, "--strict", "--runs-dir", runs_dir)
    assert code == 1 and str(truncated) in err and "--strict" in err and err.count("\n") == 1


def test_folder_with_train_val_test_reloads_for_evaluate(tmp_path, runs_dir, capsys):
    root = tmp_path / "shapes"
    for part, seed in (("train", 0), ("val", 1), ("test", 2)):
        write_class_folders(root / part, 12, (20, 24), "L", seed)
    Image.new("L", (40, 40)).save(root / "train" / "cat" / "odd-size.png")  # resized to the common size
    write_class_folders(root / "validation", 2, (20, 24), "L")  # a name cnnlab does not read: said, not trained on
    code, out, err = train_folder(capsys, "--data", root, "--runs-dir", runs_dir)
    assert code == 0 and err == (f"cnnlab: warning: {root / 'validation'}: not used: beside train/, only train/, val/ "
                                 "and test/ are read; move its images into one of them\n")
    shutil.rmtree(root / "validation")
    run = load_run(out)
    assert run.info.in_shape == (1, 20, 24) and run.recipe.model == "cnn-dropout"  # grey, the most common size
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] is not None
    assert cli.main(["evaluate", out]) == 0
    evaluated = capsys.readouterr().out
    assert evaluated.splitlines()[0].endswith(f"test accuracy: {metrics['test_accuracy']:.4f}")

    moved = tmp_path / "moved"
    root.rename(moved)
    assert cli.main(["evaluate", out, "--data-dir", str(moved)]) == 0  # a moved folder is named again
    assert capsys.readouterr().out == evaluated
    assert cli.main(["train", "--resume", out, "--epochs", "4"]) == 1  # resuming names the folder gone, as evaluate
    assert capsys.readouterr().err == (f"cnnlab: error: {out} was trained on the images in {root.resolve()}, which "
                                       "is gone; pass --data-dir FOLDER where they are now\n")

    code, out, _ = train_folder(capsys, "--data", moved, "--size", "12x8", "--channels", "3", "--model", "mlp",
                                "--runs-dir", runs_dir)
    assert code == 0 and load_run(out).info.in_shape == (3, 8, 12)


@pytest.mark.parametrize("setup, args, code, message", [
    (lambda root: None, [], 1, "no such folder"),
    (lambda root: (root / "only").mkdir(parents=True), [], 1, "need at least 2"),
    (lambda root: [(root / c).mkdir(parents=True) for c in ("a", "b")], [], 1, "holds no images"),
    (lambda root: (root / "test" / "a").mkdir(parents=True), [], 1, "no train/ beside it"),
    (lambda root: [write_class_folders(root, 2, (8, 8), "L"), (root / "cat").rename(root / os.fsdecode(b"c\xffat"))],
     ["--epochs", "1"], 1, "not UTF-8 text, and it names the class; rename it"),
    (lambda root: [write_class_folders(root / "train", 2, (8, 8), "L"), (root / "val" / "cat").mkdir(parents=True)],
     [], 1, "val: no readable images (0 found)"),
    (lambda root: None, ["--data-dir", "."], 2, "--data-dir finds the tutorial's data sets"),
])
def test_folder_errors(setup, args, code, message, tmp_path, capsys):
    setup(tmp_path / "mine")
    assert cli.main(["train", "--data", str(tmp_path / "mine"), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["train"], "name a recipe"),
    (["train", "mnist-cnn", "--size", "32"], "--size only go with --data"),
    (["train", "x", "--data", ".", "--size", "0"], "at least 2 pixels"),
    (["train", "x", "--data", ".", "--size", "48x"], "'48x': expected N or WIDTHxHEIGHT"),
])
def test_train_usage_errors(args, message, capsys):
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Acceptance: MNIST digits photographed from a page are read as well as the originals
# ---------------------------------------------------------------------------------------------------------
def photograph(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 28×28 MNIST digit as a photo of a page shows it: dark ink on white, 3× larger, off-centre, bigger canvas."""
    ink = Image.fromarray(255 - digit).resize((84, 84), Image.Resampling.BICUBIC)
    page = Image.new("L", (int(rng.integers(150, 260)), int(rng.integers(150, 260))), 255)
    page.paste(ink, (int(rng.integers(0, page.width - 84)), int(rng.integers(0, page.height - 84))))
    return page


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_SAMPLE.exists(), reason="../shared/datasets/mnist-sample not present")
def test_photographed_digits_are_read_as_well_as_the_originals(tmp_path, runs_dir, capsys):
    code = cli.main(["train", "mnist-cnn", "--data-dir", str(MNIST_SAMPLE), "--runs-dir", str(runs_dir),
                     "--epochs", "2", "--optimizer", "adam", "--device", "cpu", "--quiet"])
    assert code == 0
    run_dir = capsys.readouterr().out.strip()
    _, test = load_dataset("mnist", MNIST_SAMPLE)
    test = test.subset(torch.arange(400))
    rng = np.random.default_rng(0)
    paths = []
    for i, digit in enumerate(test.images[:, 0].numpy()):
        paths.append(tmp_path / f"{i:03d}.jpg")
        photograph(digit, rng).save(paths[-1], quality=85)

    assert cli.main(["predict", run_dir, *map(str, paths), "--json"]) == 0
    guesses = torch.tensor([json.loads(line)["class"] for line in capsys.readouterr().out.splitlines()])
    photo_accuracy = (guesses == test.labels).float().mean().item()
    original_accuracy = (predict(load_run(run_dir).model, test.images) == test.labels).float().mean().item()
    print(f"original 28×28: {original_accuracy:.4f}, photographed: {photo_accuracy:.4f}")
    assert original_accuracy > 0.85  # a model worth comparing
    assert abs(photo_accuracy - original_accuracy) <= 0.02


def test_a_failed_file_has_no_top_classes_and_says_why(digit_run, tmp_path):
    """FilePrediction.top on a file that could not be used failed on a bare assert."""
    (bad,) = [write(tmp_path) for write, _ in list(BAD_FILES.values())[:1]]
    (item,) = predict_files(load_run(digit_run), [bad])
    assert item.error and item.probabilities is None
    said = rf"^{re.escape(str(bad))}: no prediction, the file could not be used \("
    with pytest.raises(CnnlabError, match=said) as caught:
        item.top(tuple("0123456789"), 3)
    assert "\n" not in str(caught.value)
    with pytest.raises(CnnlabError, match="no prediction"):
        item.describe(tuple("0123456789"), 3)
    assert item.to_json(tuple("0123456789"), 3) == {"path": str(bad), "error": item.error}


def test_predict_save_replaces_only_figures_cnnlab_wrote(digit_run, tmp_path, capsys):
    images = write_digits(tmp_path / "in", 2)
    figures = tmp_path / "figs"
    figures.mkdir()
    mine = figures / "digit0.png"  # the learner's own file, named as the first figure would be
    mine.write_bytes(b"not cnnlab's")
    code, out, err = predict_cli(capsys, digit_run, *images, "--save", figures, "--device", "cpu")
    assert code == 1 and "cnnlab did not write it" in err and "--force" in err
    assert mine.read_bytes() == b"not cnnlab's" and (figures / "digit1.png").is_file()
    code, out, err = predict_cli(capsys, digit_run, *images, "--save", figures, "--device", "cpu")
    assert code == 1 and mine.read_bytes() == b"not cnnlab's"  # digit1.png is cnnlab's: replaced silently
    assert predict_cli(capsys, digit_run, *images, "--save", figures, "--device", "cpu", "--force")[0] == 0
    assert mine.read_bytes().startswith(b"\x89PNG")
    code, out, err = predict_cli(capsys, digit_run, *images, "--save", mine, "--device", "cpu")  # a file, not a folder
    assert code == 1
    assert err == f"cnnlab: error: {mine}: cannot make this folder (a file, not a folder); choose another\n"


def test_predict_files_takes_one_path_and_a_run_folder_and_refuses_a_network_or_no_chunk(digit_run, tmp_path):
    """One path was read as its characters ('/', 't', 'm', … each 'no such file'), a Path raised 'not iterable',
    a run folder or a network raised AttributeError … 'info', and chunk=0 predicted nothing without a word."""
    from cnnlab.models import create_model

    path = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    for paths in (str(path), path):
        (item,) = predict_files(digit_run, paths)
        assert item.path == str(path) and item.error is None and item.probabilities is not None
    with pytest.raises(CnnlabError, match="^predict_files needs a run, which says how its images were prepared"):
        list(predict_files(create_model("mlp", (1, 28, 28), 10), [path]))
    with pytest.raises(CnnlabError, match=r"^chunk=0: pass how many files to predict at a time, 1 or more$"):
        list(predict_files(digit_run, [path], chunk=0))
