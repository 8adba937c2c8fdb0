"""A Keras user's calls just work: NumPy arrays, (x, y) tuples, channels-last and flat images, one-hot labels, a
recipe by name, a class count, Keras's input_shape; and each Keras mistake is one line naming what to pass. Each
test here failed before issue #20 (most with AttributeError … 'images' or an error deep inside PyTorch)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import plots
from cnnlab.data import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.inference import Scores
from cnnlab.models import check_input
from helpers import learnable_images, same_weights

RECIPE = cnnlab.with_overrides(cnnlab.get_recipe("mnist-mlp"), {"epochs": 1, "batch_size": 16})


def keras_digits(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What keras.datasets.mnist gives: (N, 28, 28) uint8 images and (N,) class numbers."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    return learnable_images(labels, (1, 28, 28), rng)[:, 0], labels


def one_line(call) -> str:
    with pytest.raises(CnnlabError) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Arrays into fit, evaluate, predict and split
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [
    lambda x: x.reshape(-1, 28, 28, 1) / 255.0,  # the course's CNN input: channels-last floats
    lambda x: x,  # keras.datasets as it comes: (N, 28, 28) uint8
    lambda x: x.reshape(-1, 784).astype(np.float32) / 255,  # lab 2's flat rows
])
def test_fit_takes_keras_arrays_and_trains_as_on_the_image_set(layout):
    """Keras's fit(x, y, validation_data=…) with one-hot labels: the same history as cnnlab's own ImageSets."""
    images, labels = keras_digits()
    one_hot = np.eye(10, dtype=np.float32)[labels]  # keras.utils.to_categorical
    torch.manual_seed(0)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    history = cnnlab.fit(model, layout(images[:32]), one_hot[:32], RECIPE,
                         validation_data=(layout(images[32:]), one_hot[32:]), verbose=False)
    torch.manual_seed(0)
    reference = cnnlab.create_model("mlp", (1, 28, 28), 10)
    as_sets = [ImageSet(torch.from_numpy(images[part][:, None]), torch.from_numpy(labels[part]), 10)
               for part in (slice(0, 32), slice(32, None))]
    expected = cnnlab.fit(reference, *as_sets, RECIPE, verbose=False)
    assert [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in history] == \
        [(r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in expected]


def test_fit_holds_out_a_validation_split_by_the_course_rule_and_takes_its_options():
    images, labels = keras_digits(50)
    model = cnnlab.create_model("mlp", (28, 28, 1), 10)  # Keras's input_shape
    # On the CPU: on CUDA fit validates under the fast engines' TF32 and evaluate afterwards in fp32, where a
    # near-tied image may change its answer.
    history = cnnlab.fit(model, images, labels, "mnist-mlp", validation_split=0.2, epochs=2, batch_size=20,
                         verbose=False, device="cpu")
    assert len(history) == 2  # epochs=2 replaced the recipe's 10
    train, val = cnnlab.split(ImageSet.from_arrays(images, labels), 0.2, seed=9)  # what validation_split held out
    assert history[-1].val_accuracy == cnnlab.evaluate(model, val, "mnist-mlp").accuracy
    assert history.history["val_accuracy"] == [row.val_accuracy for row in history]  # Keras's history.history
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


@pytest.mark.parametrize("validation, message", [
    ({}, r"^fit was given no validation sets: pass one, validation_data=\(x_val, y_val\) or validation_split=0\.2$"),
    ({"validation_data": "both", "validation_split": 0.2}, r"^fit was given 2 validation sets: pass one"),
])
def test_fit_without_one_validation_set_says_how_to_give_one(validation, message):
    images, labels = keras_digits(20)
    if validation.get("validation_data") == "both":
        validation["validation_data"] = (images, labels)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert re.search(message, one_line(
        lambda: cnnlab.fit(model, images, labels, RECIPE, verbose=False, **validation)))


def test_evaluate_and_predict_take_what_keras_passes():
    images, labels = keras_digits(20)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    as_set = ImageSet(torch.from_numpy(images[:, None]), torch.from_numpy(labels), 10)
    expected = cnnlab.evaluate(model, as_set, RECIPE)
    one_hot = np.eye(10)[labels]
    assert cnnlab.evaluate(model, images[..., None] / 255, one_hot, RECIPE) == expected  # Keras's (x, y) order
    assert cnnlab.evaluate(model, (images, labels), "mnist-mlp") == expected  # a tuple, and a recipe by name
    probabilities = cnnlab.predict_proba(model, as_set.images)
    from_keras = cnnlab.predict_proba(model, images[..., None] / 255)
    assert isinstance(from_keras, np.ndarray) and np.allclose(from_keras, probabilities.numpy(), atol=1e-6)  # as Keras
    assert cnnlab.predict(model, (images, labels)).tolist() == probabilities.argmax(dim=1).tolist()
    assert torch.equal(cnnlab.predict(model, as_set), probabilities.argmax(dim=1))  # tensors in, tensors out


def test_split_gives_back_the_kind_it_was_given_by_the_course_rule():
    images, labels = keras_digits(50)
    (x_train, y_train), (x_val, y_val) = cnnlab.split((images, labels), val_fraction=0.2, seed=9)
    train, val = cnnlab.split(ImageSet.from_arrays(images, labels), val_fraction=0.2, seed=9)
    assert isinstance(x_train, np.ndarray) and x_train.shape == (40, 28, 28)  # to reshape and divide by 255 next
    assert np.array_equal(x_val, val.images[:, 0].numpy()) and y_train.tolist() == train.labels.tolist()
    x_train_alone, _ = cnnlab.split(images, 0.2, 9)
    assert np.array_equal(x_train_alone, x_train)
    x_tr, x_v, y_tr, y_v = cnnlab.split(images, labels, test_size=0.2, random_state=9)  # sklearn's own line
    assert np.array_equal(x_tr, x_train) and np.array_equal(x_v, x_val) and np.array_equal(y_v, y_val)
    assert [len(part) for part in cnnlab.split(images, labels)] == [40, 10, 40, 10]  # the course's 0.2 and 9
    assert one_line(lambda: cnnlab.split(images, 0.2, test_size=0.3)).startswith("test_size and random_state go with")
    message = one_line(lambda: cnnlab.split(images, "0.2"))
    assert message.startswith("split's second argument is the validation fraction, not str")
    assert one_line(lambda: cnnlab.split((images, labels[:49]))) == \
        "split was given 50 and 49 items: pass one label per image"


def test_classes_may_be_a_count():
    images, labels = keras_digits(10)
    assert ImageSet.from_arrays(images, labels, classes=10).classes == tuple("0123456789")
    as_set = ImageSet(torch.from_numpy(images[:, None]), torch.from_numpy(labels), classes=12)
    assert len(as_set.classes) == 12
    assert one_line(lambda: ImageSet.from_arrays(images, labels, classes=0)) == \
        "classes=0: pass the number of classes (1 or more) or their names"
    figure = plots.plot_predictions(torch.from_numpy(images[:2, None]), [7, 1], [7, 2], 10)
    assert [axis.get_title() for axis in figure.axes] == ["Label value = [7]  Predicted value = [7]",
                                                          "Label value = [1]  Predicted value = [2]"]


# ---------------------------------------------------------------------------------------------------------
# A recipe by name
# ---------------------------------------------------------------------------------------------------------
def test_a_recipe_may_be_named():
    images, labels = keras_digits(20)
    torch.manual_seed(0)
    model = cnnlab.create_model("cnn-dropout", (1, 28, 28), 10)
    train = ImageSet.from_arrays(images, labels)
    history = cnnlab.fit(model, train, train, "fashion-cnn", epochs=1, verbose=False)
    assert len(history) == 1
    assert one_line(lambda: cnnlab.fit(model, train, train, "adam", verbose=False)).startswith(
        "unknown recipe 'adam': choose one of")
    assert one_line(lambda: cnnlab.evaluate(model, train, {"optimizer": "adam"})).startswith(
        "expected a recipe, not dict: pass a recipe's name")


# ---------------------------------------------------------------------------------------------------------
# The model: Keras's input_shape, the number of outputs, the summary
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn-dropout", "cnn-deep"])
def test_create_model_reads_keras_channels_last_input_shape(name):
    """(28, 28, 1) built Linear(in_features=0); it is Keras's input_shape, and cannot mean anything else."""
    for keras_shape, shape in (((28, 28, 1), (1, 28, 28)), ((32, 32, 3), (3, 32, 32))):
        torch.manual_seed(0)
        model = cnnlab.create_model(name, keras_shape, 10)
        torch.manual_seed(0)
        reference = cnnlab.create_model(name, shape, 10)
        assert model.in_shape == shape
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("shape, suggestion", [((28, 28), (1, 28, 28)), ((784,), (1, 28, 28)), ((32, 32), (1, 32, 32))])
def test_an_input_shape_without_channels_is_one_line_saying_what_to_pass(shape, suggestion):
    model = cnnlab.create_model("cnn", (1, 28, 28), 10)
    expected = f"in_shape {shape}: input_shape is (channels, height, width) in cnnlab: pass {suggestion}"
    assert one_line(lambda: cnnlab.create_model("cnn", shape, 10)) == expected
    assert one_line(lambda: cnnlab.summarize(model, shape)) == expected


def test_summarize_takes_keras_shape_or_none_when_the_model_knows_it():
    model = cnnlab.create_model("cnn-dropout", (1, 28, 28), 10)
    assert cnnlab.summarize(model, (28, 28, 1)) == cnnlab.summarize(model, (1, 28, 28)) == cnnlab.summarize(model)
    rebuilt = cnnlab.create_model("cnn-dropout", (1, 28, 28), 10)
    rebuilt.load_state_dict(model.state_dict())  # strict: the shape is not a weight, and survives the load
    assert "in_shape" not in str(list(model.state_dict())) and len(cnnlab.summarize(rebuilt)) == 8
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert one_line(lambda: cnnlab.summarize(bare)) == \
        "summarize needs the input shape of a model not built by create_model: summarize(model, (1, 28, 28))"


def test_printed_summary_is_keras_table():
    text = str(cnnlab.summarize(cnnlab.create_model("cnn-dropout", (1, 28, 28), 10)))
    lines = text.splitlines()
    assert lines[1].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"] and set(lines[2]) == {"="}
    assert lines[3].split() == ["conv2d", "(Conv2d)", "(None,", "32,", "28,", "28)", "320"]
    assert "dense (Linear)" in text and "802,944" in text
    assert lines[-4:-1] == ["Total params: 804,554", "Trainable params: 804,554", "Non-trainable params: 0"]
    assert "LayerRow" not in text
    frozen = cnnlab.create_model("cnn", (1, 28, 28), 10)
    frozen.conv2d.requires_grad_(False)
    assert "Non-trainable params: 320" in str(cnnlab.summarize(frozen))


@pytest.mark.parametrize("outputs", [5, 12])
def test_a_model_with_the_wrong_number_of_outputs_is_refused_before_a_step(outputs):
    """5 outputs on 10 classes failed inside F.one_hot; 12 trained without a word."""
    images, labels = keras_digits(20)
    model = cnnlab.create_model("mlp", (1, 28, 28), outputs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = one_line(lambda: cnnlab.fit(model, images, labels, RECIPE, validation_data=(images, labels),
                                          verbose=False))
    assert message == (f"the model has {outputs} outputs but the data has 10 classes; build it with "
                       "create_model(name, (1, 28, 28), 10)")
    assert same_weights(model, before)
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, outputs))  # not from create_model: run once
    assert one_line(lambda: cnnlab.fit(bare, images, labels, RECIPE, validation_split=0.5, verbose=False)) == \
        message


def test_data_refused_leaves_the_model_where_and_as_it_was():
    """fit checks the data before it moves the model to its device and layout (fashion-cpu's channels-last on
    the CPU here; the GPU, where there is one): a refused call changes nothing."""
    model = cnnlab.create_model("bn-cnn", (1, 28, 28), 10)
    wrong = ImageSet(torch.zeros(8, 1, 20, 20, dtype=torch.uint8), torch.arange(8), tuple("0123456789"))
    with pytest.raises(CnnlabError, match="model expects 1×28×28 images"):
        cnnlab.fit(model, wrong, wrong, "fashion-cpu", device="cpu", verbose=False)
    assert all(p.is_contiguous() for p in model.parameters())  # not moved to channels-last


def test_check_input_names_the_missing_or_misplaced_channel_axis():
    model = cnnlab.create_model("cnn", (1, 28, 28), 10)
    assert one_line(lambda: check_input(model, (28, 28))) == \
        "images of 28×28 have no channel axis; pass (N, C, H, W): images[:, None] is (N, 1, 28, 28)"
    assert one_line(lambda: check_input(model, (28, 28, 1))) == ("model expects 1×28×28 images, the data has "
                                                                 "28×28×1; the data is channels-last: "
                                                                 "images.permute(0, 3, 1, 2) is (N, C, H, W)")
    bare = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(0), torch.nn.Linear(4 * 26 * 26, 10))
    assert "no channel axis" in one_line(lambda: check_input(bare, (28, 28)))  # not taken as one unbatched image


def test_an_ambiguous_keras_layout_is_one_line_saying_what_to_pass():
    model = cnnlab.create_model("cnn-deep", (3, 32, 32), 10)
    flat = np.zeros((4, 3 * 32 * 32), np.float32)
    assert one_line(lambda: cnnlab.predict(model, flat)) == (
        "images of shape (4, 3072) do not fit the model's 3×32×32 input (a flat row does not say its channel "
        "order): pass (N, 32, 32, 3) as Keras does, or (N, 3, 32, 32)")


# ---------------------------------------------------------------------------------------------------------
# evaluate's answer
# ---------------------------------------------------------------------------------------------------------
def test_evaluate_returns_keras_loss_and_accuracy_that_read_as_before(capsys):
    images, labels = keras_digits(20)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    score = cnnlab.evaluate(model, images, labels, RECIPE)
    assert isinstance(score, Scores) and isinstance(score, tuple)
    loss, accuracy = score
    assert (score[0], score[1]) == (loss, accuracy) == (score["loss"], score["accuracy"])
    assert dict(score) == {"loss": loss, "accuracy": accuracy}
    assert repr(score) == f"Scores(loss={loss:.4f}, accuracy={accuracy:.4f})" == str(score)
    with pytest.raises(KeyError):
        score["count"]  # a tuple method, not a score
    assert capsys.readouterr().out == ""  # quiet, as the course calls it (verbose=0)
    cnnlab.evaluate(model, images, labels, RECIPE, verbose=True)
    assert capsys.readouterr().out.endswith(f"- loss: {loss:.4f} - accuracy: {accuracy:.4f}\n")


def test_to_categorical_is_kerass_and_checks_its_count():
    assert cnnlab.to_categorical(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert cnnlab.to_categorical([1, 0]).dtype == np.float32
    assert one_line(lambda: cnnlab.to_categorical(np.array([0, 5]), 3)) == \
        "labels run from 0 to 5; num_classes=3 must exceed the largest"
