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



def test_validation_split_holds_out_what_split_gives_for_the_recipes_seed():
    """fit passes recipe.split_seed on: a seed other than the course's 9 holds out other images."""
    from cnnlab.loop import fit_data

    images, labels = keras_digits(50)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    train, val = fit_data(model, images, labels, validation_split=0.2, seed=5)
    expected_train, expected_val = cnnlab.split(ImageSet.from_arrays(images, labels), 0.2, seed=5)
    assert torch.equal(val.images, expected_val.images) and torch.equal(train.labels, expected_train.labels)
    assert not torch.equal(val.images, cnnlab.split(ImageSet.from_arrays(images, labels), 0.2, seed=9)[1].images)



def test_fit_holds_out_by_the_recipes_split_seed():
    """validation_split with split_seed 5 trains as fit on split(…, seed=5)'s two sets does, not on the course's 9."""
    images, labels = keras_digits(50)
    recipe = cnnlab.with_overrides(RECIPE, {"split_seed": 5})
    torch.manual_seed(0)
    history = cnnlab.fit(cnnlab.create_model("mlp", (1, 28, 28), 10), images, labels, recipe,
                         validation_split=0.2, verbose=False, device="cpu")
    torch.manual_seed(0)
    expected = cnnlab.fit(cnnlab.create_model("mlp", (1, 28, 28), 10),
                          *cnnlab.split(ImageSet.from_arrays(images, labels), 0.2, seed=5), recipe,
                          verbose=False, device="cpu")
    assert [(r.loss, r.val_loss) for r in history] == [(r.loss, r.val_loss) for r in expected]

def test_colour_images_channels_last_are_transposed_not_reshaped():
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)  # Keras's (N, H, W, C)
    expected = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, C, H, W): channel c is images[..., c]
    assert torch.equal(cnnlab.data.as_images(images, in_shape=(3, 8, 8)), expected)
    assert torch.equal(ImageSet.from_arrays(images, np.arange(4)).images, expected)


def test_one_hot_labels_name_as_many_classes_as_they_have_columns():
    images, labels = keras_digits(10)
    one_hot = np.eye(10, dtype=np.float32)[labels % 5]  # ten columns, classes 0–4 only present
    assert ImageSet.from_arrays(images, one_hot).classes == tuple("0123456789")

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
    absent = "; or, if the labels lack the last classes, pass them one-hot: cnnlab.to_categorical(labels, 12)"
    assert message == (f"the model has {outputs} outputs but the data has 10 classes; build it with "
                       "create_model(name, (1, 28, 28), 10)" + (absent if outputs > 10 else ""))
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


# ---------------------------------------------------------------------------------------------------------
# Hostile input through the API: each failed deep inside NumPy or PyTorch, or answered nonsense, before
# ---------------------------------------------------------------------------------------------------------
def test_labels_beyond_the_models_outputs_are_one_line_from_evaluate():
    """Labels 0–11 on a 10-output network failed inside cross_entropy ('Class values must be smaller than
    num_classes'); fewer classes than outputs stay fine."""
    images, labels = keras_digits(12)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert one_line(lambda: cnnlab.evaluate(model, images, np.arange(12), RECIPE)) == (
        "evaluate's data has label 11, the model has 10 outputs (classes 0–9): pass labels of the classes it was "
        "built for")
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # not from create_model: run once
    assert "the model has 10 outputs" in one_line(lambda: cnnlab.evaluate(bare, images, np.arange(12), RECIPE))
    assert 0 <= cnnlab.evaluate(model, images, labels % 3, RECIPE).accuracy <= 1


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_a_batch_size_that_is_not_a_count_is_one_line_from_evaluate_and_predict(batch_size):
    """evaluate(batch_size=-3) returned loss 0 and accuracy 0 without a word; predict's raised NumPy's AxisError."""
    images, labels = keras_digits(8)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    expected = f"batch_size={batch_size!r}: pass a whole number of images, 1 or more, or leave it out"
    assert one_line(lambda: cnnlab.evaluate(model, images, labels, RECIPE, batch_size=batch_size)) == expected
    assert one_line(lambda: cnnlab.predict(model, images, batch_size=batch_size)) == expected


def test_no_images_at_all_is_one_line_naming_the_call():
    """Empty arrays: predict raised NumPy's AxisError, predict_proba gave a (0,) tensor, fit and evaluate said
    'classes=0: pass the number of classes'."""
    images, labels = keras_digits(8)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert one_line(lambda: cnnlab.predict(model, images[:0])) == \
        "predict's data has no images (shape (0, 28, 28)): pass at least one image"
    assert "predict's data has no images" in one_line(lambda: cnnlab.predict_proba(model, torch.zeros(0, 1, 28, 28)))
    assert one_line(lambda: cnnlab.evaluate(model, images[:0], labels[:0], RECIPE)) == \
        "evaluate's data has no images (shape (0, 28, 28)): pass at least one image"
    assert one_line(lambda: cnnlab.fit(model, images[:0], labels[:0], RECIPE, validation_data=(images, labels),
                                       verbose=False)).startswith("the training data has no images")


def test_negative_labels_are_named_as_negative():
    """Labels -1 … 8 were refused as 'label -1 is out of range for 9 classes; pass every class name'."""
    images, labels = keras_digits(10)
    assert one_line(lambda: cnnlab.evaluate(cnnlab.create_model("mlp", (1, 28, 28), 10), images, labels - 1,
                                            RECIPE)) == "labels include -1; pass class numbers from 0, one per class"


@pytest.mark.parametrize("argument, value, advice", [
    ("shuffle", False, "fit takes no shuffle=False: fit reshuffles"),
    ("callbacks", [print], "fit takes no callbacks: pass on_epoch_end=function"),
    ("class_weight", {0: 2.0}, "fit takes no class_weight: every image weighs the same"),
    ("initial_epoch", 3, "fit takes no initial_epoch: continue a run with cnnlab.resume_run"),
])
def test_kerass_fit_arguments_cnnlab_lacks_say_what_to_do_instead(argument, value, advice):
    """They were Python's TypeError 'unexpected keyword argument', which says nothing of what to do."""
    images, labels = keras_digits(8)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert one_line(lambda: cnnlab.fit(model, images, labels, RECIPE, validation_split=0.5, verbose=False,
                                       **{argument: value})).startswith(advice)


def test_kerass_shuffle_true_and_predict_verbose_are_taken():
    """Keras's defaults as the course spells them: fit(shuffle=True) is what fit does; predict(x, verbose=0) was
    a TypeError. A name Keras has not either stays Python's TypeError."""
    images, labels = keras_digits(20)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert len(cnnlab.fit(model, images, labels, RECIPE, validation_split=0.5, verbose=False, shuffle=True)) == 1
    assert cnnlab.predict(model, images, verbose=0).shape == (20,)
    assert cnnlab.predict_proba(model, images, verbose=0).shape == (20, 10)
    with pytest.raises(TypeError, match="valdation_split"):
        cnnlab.fit(model, images, labels, RECIPE, valdation_split=0.5)


@pytest.mark.parametrize("callback", ["print", [print]])
def test_on_epoch_end_that_cannot_be_called_is_refused_before_training(callback):
    """It failed with TypeError 'not callable' only after the first epoch had trained."""
    images, labels = keras_digits(8)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert "on_epoch_end must be a function" in one_line(
        lambda: cnnlab.fit(model, images, labels, RECIPE, validation_split=0.5, verbose=False, on_epoch_end=callback))
    assert same_weights(model, before)


def test_evaluate_takes_kerass_labels_as_a_list():
    """evaluate(model, x, list(y), recipe) read the list as the recipe ('expected a recipe, not list')."""
    images, labels = keras_digits(8)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    assert cnnlab.evaluate(model, images, list(labels), RECIPE) == cnnlab.evaluate(model, images, labels, RECIPE)


def test_a_class_absent_from_the_training_labels_says_to_pass_them_one_hot():
    """Training labels 0–8 with validation labels 0–9 were refused as 'ImageSet label 9 is out of range for 9
    classes; pass every class name', which fit has no place for; one-hot labels name all ten and train."""
    images, labels = keras_digits(40)
    train = labels != 9
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    message = one_line(lambda: cnnlab.fit(model, images[train], labels[train], RECIPE,
                                          validation_data=(images, labels), verbose=False))
    assert message.startswith("the validation data has label 9, the training data's labels run 0–8: pass labels "
                              "one-hot, cnnlab.to_categorical(labels, classes)")
    assert "cnnlab.to_categorical(labels, 10)" in one_line(
        lambda: cnnlab.fit(model, images[train], labels[train], RECIPE, validation_split=0.5, verbose=False))
    history = cnnlab.fit(model, images[train], cnnlab.to_categorical(labels[train], 10), RECIPE,
                         validation_data=(images, labels), verbose=False)
    assert len(history) == 1


def test_kerass_one_image_batch_of_grey_digits_is_predicted():
    """predict(model, x_test[:1]) — (1, 28, 28) — was refused as one (C, H, W) image without its batch axis; for a
    one-channel network both readings are the same image. A tensor keeps PyTorch's reading (test_inference)."""
    images, _ = keras_digits(4)
    model = cnnlab.create_model("cnn", (1, 28, 28), 10)
    assert np.allclose(cnnlab.predict_proba(model, images[:1]), cnnlab.predict_proba(model, images)[:1], atol=1e-6)


def test_ragged_lists_are_one_line():
    """Lists of images or labels of unequal lengths failed inside NumPy ('inhomogeneous shape')."""
    images, labels = keras_digits(4)
    model = cnnlab.create_model("mlp", (1, 28, 28), 10)
    ragged = [images[0], images[1][:27]]
    assert one_line(lambda: cnnlab.predict(model, ragged)) == \
        "images are lists of different lengths: pass one array whose rows all have one shape"
    assert one_line(lambda: cnnlab.evaluate(model, images[:2], [[0], [1, 2]], RECIPE)).startswith(
        "labels are lists of different lengths")


def test_batchnorm_with_one_training_image_is_refused_before_a_step():
    """One training image failed inside BatchNorm: 'Expected more than 1 value per channel when training'."""
    images, labels = keras_digits(2)
    model = cnnlab.create_model("bn-cnn", (1, 28, 28), 2)
    assert one_line(lambda: cnnlab.fit(model, images, labels, RECIPE, validation_split=0.5, verbose=False)) \
        .startswith("the training data has 1 image, and BatchNorm cannot train on one")


@pytest.mark.parametrize("seed", ["9", 1.5, -1, True])
def test_a_split_seed_that_numpy_cannot_take_is_one_line(seed):
    """'9' and 1.5 failed inside NumPy ('Cannot cast scalar'), -1 with 'Seed must be between 0 and 2**32 - 1'."""
    images, labels = keras_digits(10)
    assert one_line(lambda: cnnlab.split((images, labels), 0.2, seed=seed)).startswith(
        f"seed={seed!r}: pass a whole number from 0 to 2**32 - 1")


@pytest.mark.parametrize(("keywords", "named"), [({"random_state": -1}, "random_state=-1: pass a whole number"),
                                                 ({"test_size": 1.5}, "test_size=1.5: the validation fraction"),
                                                 ({"test_size": 0}, "test_size=0: the validation fraction")])
def test_scikit_learns_split_names_a_bad_argument_as_written(keywords, named):
    """split(x, y, random_state=-1) was refused as 'seed=-1', an argument the course's line never names."""
    images, labels = keras_digits(10)
    assert one_line(lambda: cnnlab.split(images, labels, **keywords)).startswith(named)


@pytest.mark.parametrize("num_classes", [2.5, "10"])
def test_to_categorical_names_a_class_count_that_is_not_whole(num_classes):
    """2.5 failed inside np.eye ('cannot be interpreted as an integer'), '10' in a tensor comparison."""
    assert one_line(lambda: cnnlab.to_categorical([0, 1], num_classes)) == \
        f"num_classes={num_classes!r}: pass the number of classes, a whole number"


def test_a_keras_style_network_of_flat_rows_is_told_to_start_with_flatten():
    """nn.Sequential(nn.Linear(784, …), …), Keras's Dense stack without its Flatten: (N, 28, 28) images failed with
    PyTorch's 'mat1 and mat2 shapes cannot be multiplied' and nothing to do; (N, 784) rows with no way to lay them
    out. Each now says what to change."""
    images, labels = keras_digits(20)
    dense = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    assert one_line(lambda: cnnlab.fit(dense, images, labels, RECIPE, validation_split=0.5, verbose=False)) \
        .endswith("cnnlab passes images (N, C, H, W): start the network with nn.Flatten(), as Keras's Flatten() layer")
    assert "are flat rows, which only a model from create_model can lay out: pass images.reshape(-1, 28, 28)" in \
        one_line(lambda: cnnlab.predict(dense, images.reshape(20, -1)))


def test_read_only_arrays_are_read_without_pytorchs_warning(tmp_path):
    """np.frombuffer and a memmap opened 'r' printed PyTorch's 'The given NumPy array is not writable … undefined
    behavior' from inside cnnlab, though cnnlab only reads pixels. In a process of its own: PyTorch warns once."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    script = ("import numpy as np, cnnlab\n"
              f"np.arange(784 * 4, dtype=np.uint8).tofile({str(tmp_path / 'x.bin')!r})\n"
              f"mapped = np.memmap({str(tmp_path / 'x.bin')!r}, np.uint8, 'r', shape=(4, 28, 28))\n"
              "model = cnnlab.create_model('mlp', (1, 28, 28), 10)\n"
              "frozen = np.frombuffer(bytes(784 * 4), np.uint8).reshape(4, 28, 28)\n"
              "print(cnnlab.predict(model, mapped).shape, cnnlab.predict(model, frozen).shape)\n")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0 and "not writable" not in done.stderr, done.stderr[-500:]
    assert done.stdout.strip() == "(4,) (4,)"
