"""NumPy in, Jupyter out: Keras-style arrays become an ImageSet, a model built for other images is refused in
one line before any step, and what the API returns shows itself as HTML in a notebook."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import cnnlab
from cnnlab import plots
from cnnlab.data import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.history import EpochResult, write_history
from cnnlab.loop import History
from helpers import REPO, same_weights

DIGITS = tuple("0123456789")


# ---------------------------------------------------------------------------------------------------------
# ImageSet.from_arrays and ImageSet's own checks
# ---------------------------------------------------------------------------------------------------------
def keras_arrays(n: int = 6, shape: tuple[int, ...] = (28, 28), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def test_from_arrays_adds_the_channel_axis_to_grey_images():
    images, labels = keras_arrays()
    dataset = ImageSet.from_arrays(images, labels, DIGITS)
    assert dataset.images.shape == (6, 1, 28, 28) and dataset.images.dtype == torch.uint8
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(images))
    assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == labels.tolist()


def test_from_arrays_reads_keras_channels_last_colour_and_cifar_label_columns():
    images, labels = keras_arrays(shape=(32, 32, 3))
    dataset = ImageSet.from_arrays(images, labels[:, None], DIGITS)  # keras.datasets.cifar10 gives (N, 1) labels
    assert dataset.images.shape == (6, 3, 32, 32)
    assert torch.equal(dataset.images.permute(0, 2, 3, 1), torch.from_numpy(images))  # pixel for pixel
    assert dataset.labels.tolist() == labels.tolist()


def test_from_arrays_takes_the_course_scaled_floats_and_one_hot_labels():
    images, labels = keras_arrays(shape=(28, 28, 1))
    one_hot = np.eye(10, dtype=np.float32)[labels]  # keras.utils.to_categorical
    dataset = ImageSet.from_arrays(images.astype(np.float32) / 255.0, one_hot)
    assert torch.equal(dataset.images[..., None].squeeze(-1), torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert dataset.labels.tolist() == labels.tolist()
    assert dataset.classes == DIGITS  # the one-hot width names the classes when none are given


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, np.int64), r"\(4, 3, 32, 32\) looks channels-first.*transpose"),
    (np.zeros((4, 28, 28, 5), np.uint8), np.zeros(4, np.int64), r"\(4, 28, 28, 5\).*channels-last.*C = 1 or 3"),
    (np.zeros((4, 784), np.uint8), np.zeros(4, np.int64), r"\(4, 784\).*\(N, H, W\)"),
    (np.full((4, 28, 28), 255.0), np.zeros(4, np.int64), r"float64 with values from 255 to 255.*floats in \[0, 1\]"),
    (np.full((4, 28, 28), 300, np.int64), np.zeros(4, np.int64), r"int64 with values from 300 to 300.*uint8 pixels"),
    (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.float32), r"labels of shape \(4,\) and dtype float32"),
    (np.zeros((4, 28, 28), np.uint8), np.full((4, 10), 0.1), r"\(4, 10\) are not one-hot"),
    (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.int64), r"3 labels for 4 images"),
    (np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 10]), r"label 10 is out of range for 10 classes"),
])
def test_from_arrays_refuses_what_it_cannot_read_in_one_line(images, labels, message):
    with pytest.raises(CnnlabError, match=message) as caught:
        ImageSet.from_arrays(images, labels, DIGITS)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("images, labels, message", [
    (torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
     r"uint8 tensor \(N, C, H, W\), not Tensor uint8 of shape \(4, 28, 28\)"),
    (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), r"not Tensor float32 of shape"),
    (np.zeros((4, 1, 28, 28), np.uint8), torch.zeros(4, dtype=torch.long), r"not ndarray uint8.*from_arrays"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, 10), r"labels must be an int64 tensor"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), r"5 labels for 4 images"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, -1, 2]), r"label -1 is out of range"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 10, 2]), r"label 10 is out of range"),
])
def test_imageset_checks_what_it_is_given(images, labels, message):
    """keras.datasets' (N, 28, 28) arrays, handed over as they are, fail here rather than deep in training."""
    with pytest.raises(CnnlabError, match=message):
        ImageSet(images, labels, DIGITS)


# ---------------------------------------------------------------------------------------------------------
# The model's input shape, checked before the first step
# ---------------------------------------------------------------------------------------------------------
def grey_digits(n: int = 8) -> ImageSet:
    return ImageSet(torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.arange(n) % 10, DIGITS)


def test_fit_evaluate_predict_name_both_shapes_when_the_model_was_built_for_others():
    model = cnnlab.create_model("cnn-deep", (3, 32, 32), 10)
    recipe = cnnlab.with_overrides(cnnlab.get_recipe("cifar10-cnn"), {"epochs": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digits = grey_digits()
    expected = "model expects 3×32×32 images, the data has 1×28×28"
    with pytest.raises(CnnlabError, match=expected):
        cnnlab.fit(model, digits, digits, recipe, verbose=False)
    with pytest.raises(CnnlabError, match=expected):
        cnnlab.evaluate(model, digits, recipe)
    with pytest.raises(CnnlabError, match=expected):
        cnnlab.predict(model, digits.images)
    assert same_weights(model, before)  # no step was taken


def test_a_model_of_your_own_is_tried_on_one_blank_image():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # not from create_model
    recipe = cnnlab.with_overrides(cnnlab.get_recipe("fashion-cnn"), {"epochs": 1})
    with pytest.raises(CnnlabError, match=r"cannot take the data's 1×28×28 images \(mat1 and mat2 shapes") as caught:
        cnnlab.fit(model, grey_digits(), grey_digits(), recipe, verbose=False)
    assert "\n" not in str(caught.value)
    assert model.training  # the check put the model back in the mode it found it in


# ---------------------------------------------------------------------------------------------------------
# What a notebook shows
# ---------------------------------------------------------------------------------------------------------
def test_fit_returns_a_history_list_that_renders_its_table_and_curves():
    torch.manual_seed(0)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    recipe = cnnlab.with_overrides(cnnlab.get_recipe("mnist-mlp"), {"epochs": 2})
    history = cnnlab.fit(model, grey_digits(16), grey_digits(8), recipe, verbose=False)
    assert isinstance(history, list) and [row.epoch for row in history] == [1, 2]
    assert all(isinstance(row, EpochResult) for row in history)
    html = history._repr_html_()
    assert f"{history[-1].val_accuracy:.4f}" in html and html.count("data:image/png;base64,") == 2


def test_summary_renders_as_keras_table():
    html = cnnlab.summarize(cnnlab.create_model("cnn", (1, 28, 28), 10), (1, 28, 28))._repr_html_()
    assert "<td>conv2d (Conv2d)</td><td>(None, 32, 28, 28)</td><td>320</td>" in html
    assert "Total params: 804,554" in html


def test_run_and_evaluation_render_metrics_curves_and_per_class_table(digit_run, tmp_path):
    from cnnlab.evaluation import analyse

    write_history(digit_run / "history.csv", History([EpochResult(1, 2.0, 0.3, 1.9, 0.35, 1.0)]))
    run = cnnlab.load_run(digit_run)
    html = run._repr_html_()
    assert "mnist-mlp" in html and "<td>0.3500</td>" in html and html.count("data:image/png;base64,") == 2
    evaluation = analyse(run, grey_digits(20))
    html = evaluation._repr_html_()
    assert f"test accuracy {evaluation.accuracy:.4f}" in html and "<th>precision</th>" in html
    assert html.count("<tr>") == 1 + 10 and "data:image/png;base64," in html  # header + one row per class
    assert evaluation.mistakes and 'alt="the worst mistakes"' in html  # the gallery too, inline


def test_plot_helpers_return_figures_and_still_write_files(tmp_path):
    history = [EpochResult(1, 2.0, 0.3, 1.9, 0.35, 1.0), EpochResult(2, 1.5, 0.5, 1.4, 0.55, 1.0)]
    figure = plots.plot_curves(history, "loss")
    assert isinstance(figure, Figure) and [line.get_ydata().tolist() for line in figure.axes[0].lines] == \
        [[2.0, 1.5], [1.9, 1.4]]
    images = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    figure = plots.plot_predictions(images, [7, 1, 2], [7, 1, 3], DIGITS, tmp_path / "predictions.png")
    assert [axis.get_title() for axis in figure.axes][0] == "Label value = [7]  Predicted value = [7]"
    assert (tmp_path / "predictions.png").read_bytes().startswith(b"\x89PNG")


def test_cnnlab_predict_stays_the_function_once_its_module_is_loaded():
    """`cnnlab.predict(model, images)` in a notebook, after any call that loaded cnnlab/prediction.py (the module
    has a name of its own, so the import system's setting of submodules on the package cannot shadow the function)."""
    code = ("import cnnlab, cnnlab.evaluation, cnnlab.prediction as m; "
            "print(callable(cnnlab.predict), cnnlab.predict.__name__, m.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert out.split() == ["True", "predict", "cnnlab.prediction"]  # the function, beside its module


def test_analyse_takes_a_network_still_in_memory_with_its_recipe():  # a lab's model, before any run folder
    from cnnlab.evaluation import analyse

    torch.manual_seed(0)
    model, recipe, test = cnnlab.create_model("mlp", (1, 28, 28), 10), cnnlab.get_recipe("mnist-mlp"), grey_digits(20)
    evaluation = analyse(model, test, "cpu", recipe)
    assert evaluation.accuracy == cnnlab.evaluate(model, test, recipe, "cpu")["accuracy"] and evaluation.test is test
    assert sum(score.support for score in evaluation.scores) == 20
