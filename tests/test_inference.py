"""cnnlab.inference: one input rule and one forward rule for evaluate, predict, explain, the Inside view and export.
Each test here fails on the code before the inference object (issue #19)."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab import get_recipe
from cnnlab.augment import Normalization
from cnnlab.data import ImageSet, as_image_set
from cnnlab.errors import CnnlabError
from cnnlab.explain import explain_image, occlusion, saliency
from cnnlab.images import prepare_file
from cnnlab.inference import Inference, evaluate, loss_fn, to_input
from cnnlab.inside import activations
from cnnlab.loop import fit_data
from cnnlab.models import create_model
from cnnlab.prediction import predict, predict_proba
from cnnlab.runs import ModelInfo, Run, load_run, save_run_files, save_weights
from helpers import running_studio

SHAPE = (1, 28, 28)


def digits(n: int = 12, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % 10
    images[labels % 2 == 0, :, 2:10, 2:10] = 255  # a corner block: left and right differ, so a mirror counts
    return ImageSet(images, labels, tuple("0123456789"))


def tta_run(tta: str = "flip", model: str = "cnn") -> Run:
    """An untrained run with test-time augmentation and normalisation, whose mirror gives other logits."""
    torch.manual_seed(0)
    network = create_model(model, SHAPE, 10).eval()
    recipe = replace(get_recipe("mnist-cnn"), tta=tta, model=model)
    info = ModelInfo(model, SHAPE, tuple("0123456789"), "mnist", Normalization((0.3,), (0.4,)))
    return Run(Path("."), recipe, info, network, [], {})


def test_float_images_in_0_1_are_not_divided_by_255_again():
    """The issue: cnnlab.predict(model, images) with images already / 255 gave 'Sandal' for every Fashion-MNIST
    test image (accuracy 0.0975 for 0.8280)."""
    torch.manual_seed(0)
    model = create_model("cnn", SHAPE, 10)
    images = digits().images
    expected = predict_proba(model, images)
    assert torch.allclose(predict_proba(model, images.float() / 255), expected, atol=1e-6)
    assert torch.allclose(predict_proba(model, images.double() / 255), expected, atol=1e-6)
    assert torch.equal(predict(model, images.float() / 255), expected.argmax(dim=1))


@pytest.mark.parametrize("images, message", [
    (torch.full((2, *SHAPE), 255.0), r"^images are float32 with values from 255 to 255; pass uint8 pixels 0–255 or "
                                      r"floats in \[0, 1\] \(divide 0–255 pixels by 255 once, not twice, or pass "
                                      r"them as uint8\)$"),
    (torch.full((2, *SHAPE), -0.5), r"^images are float32 with values from -0.5 to -0.5; pass uint8"),
    (torch.full((2, *SHAPE), float("nan")), r"^images are float32 with NaN only; pass uint8"),
    (torch.full((2, *SHAPE), 300), r"^images are int64 with values from 300 to 300; pass uint8 pixels 0–255 or "
                                   r"floats in \[0, 1\]$"),
    (torch.zeros((2, *SHAPE), dtype=torch.complex64), r"^images are complex64; pass uint8 pixels 0–255 or "
                                                       r"floats in \[0, 1\]$"),
    (torch.zeros(SHAPE, dtype=torch.uint8), r"^images of shape \(1, 28, 28\): expected a batch \(N, C, H, W\); one "
                                            r"image \(C, H, W\) is images\[None\]$"),
    (torch.zeros((2, 3, 28, 28), dtype=torch.uint8), r"^model expects 1×28×28 images, the data has 3×28×28"),
])
def test_anything_but_uint8_or_floats_in_0_1_is_one_line_saying_what_to_pass(images, message):
    model = create_model("cnn", SHAPE, 10)
    for call in (lambda: predict_proba(model, images), lambda: Inference(model).prepare(images)):
        with pytest.raises(CnnlabError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


def pixels(dtype: type, low: float, high: float) -> np.ndarray:
    """A batch (2, 1, 28, 28) of ``dtype`` whose values run evenly from ``low`` to ``high``."""
    return np.linspace(low, high, 2 * 28 * 28).reshape(2, *SHAPE).astype(dtype)


def with_one(images: np.ndarray, value: float) -> np.ndarray:
    images[1, 0, 5, 5] = value
    return images


PASS = "pass uint8 pixels 0–255 or floats in [0, 1]"


@pytest.mark.parametrize("images, refusal", [
    (pixels(np.uint8, 0, 255), None),
    (pixels(np.int8, 0, 127), None),
    (pixels(np.int16, 0, 255), None),
    (pixels(np.int32, 0, 255), None),
    (pixels(np.int64, 0, 255), None),
    (pixels(np.uint16, 0, 255), None),
    (pixels(np.float16, 0, 1), None),
    (pixels(np.float32, 0, 1), None),
    (pixels(np.float64, 0, 1), None),
    (pixels(np.bool_, 0, 1), f"images are bool; {PASS} (a True/False mask: pass it as uint8 0 and 255)"),
    (pixels(np.int64, 0, 256), f"images are int64 with values from 0 to 256; {PASS}"),
    (pixels(np.int16, -1, 255), f"images are int16 with values from -1 to 255; {PASS}"),
    (pixels(np.uint32, 0, 70000), f"images are uint32 with values from 0 to 70000; {PASS}"),
    (pixels(np.float32, 0, 255), f"images are float32 with values from 0 to 255; {PASS} "
                                 "(divide 0–255 pixels by 255 once, not twice, or pass them as uint8)"),
    (pixels(np.float16, 0, 255), f"images are float16 with values from 0 to 255; {PASS} "
                                 "(divide 0–255 pixels by 255 once, not twice, or pass them as uint8)"),
    (pixels(np.float64, -1, 1), f"images are float64 with values from -1 to 1; {PASS} "
                                "(values below 0 look normalised: pass the pixels before normalising)"),
    (with_one(pixels(np.float64, 0, 1), np.inf), f"images are float64 with values from 0 to inf; {PASS}"),
    (with_one(pixels(np.float32, 0, 1), np.nan), f"images are float32 with values from 0 to 1 and NaN; {PASS}"),
    (np.full((2, *SHAPE), np.nan), f"images are float64 with NaN only; {PASS}"),
])
def test_the_same_pixels_get_the_same_verdict_and_words_at_every_door(images, refusal):
    """The issue: fit took int64 pixels 0–255 that predict refused, and each door said no in its own words. Now
    NumPy arrays and tensors of one dtype and one set of values get one verdict and one message from fit,
    evaluate, predict and Inference, and what is taken gives the network the same input as its uint8 pixels."""
    model, labels = create_model("cnn", SHAPE, 10), np.arange(2)
    doors = {"fit": lambda x: fit_data(model, x, labels, validation_split=0.5),
             "evaluate": lambda x: evaluate(model, x, labels, get_recipe("mnist-cnn")),
             "predict": lambda x: predict_proba(model, x),
             "Inference.prepare": lambda x: Inference(model).prepare(torch.as_tensor(x))}
    verdicts = {}
    for kind, given in (("numpy", images), ("torch", torch.from_numpy(images))):
        for door, call in doors.items():
            try:
                call(given)
                verdicts[kind, door] = None
            except CnnlabError as error:
                verdicts[kind, door] = str(error)
    assert verdicts == dict.fromkeys(verdicts, refusal)
    if refusal is None:
        as_uint8 = np.rint(images.astype(np.float64) * (255 if images.dtype.kind == "f" else 1)).astype(np.uint8)
        assert torch.equal(as_image_set(images, labels, in_shape=SHAPE).images, torch.from_numpy(as_uint8))
        if images.dtype.kind in "iu":  # integers are the pixels themselves: the same input, to the bit
            assert torch.equal(to_input(torch.from_numpy(images)), to_input(torch.from_numpy(as_uint8)))


def test_uint8_pixels_are_not_read_to_be_checked():
    """No pass over the values and no wait for the device: a tensor with no data (the meta device) passes."""
    assert to_input(torch.empty((2, *SHAPE), dtype=torch.uint8, device="meta")).shape == (2, *SHAPE)


def test_the_input_rule_leaves_the_callers_tensor_alone():
    images = torch.rand(2, *SHAPE)
    kept = images.clone()
    inputs = to_input(images, Normalization((0.5,), (0.25,)))
    assert torch.equal(images, kept) and torch.allclose(inputs, (kept - 0.5) / 0.25)
    assert torch.equal(to_input(torch.full((1, *SHAPE), 255, dtype=torch.uint8)), torch.ones(1, *SHAPE))


def test_a_run_predicts_with_its_own_normalisation_and_tta():
    run = tta_run("flip-translate")
    images = digits().images
    inputs = to_input(images, run.info.normalization)
    with torch.no_grad():
        expected = torch.softmax(cnnlab.augment.tta_logits(run.model, inputs, "flip-translate"), dim=1)
    assert torch.allclose(predict_proba(run, images), expected, atol=1e-6)
    assert torch.allclose(Inference.of(run).proba(images), expected, atol=1e-6)
    assert not torch.allclose(predict_proba(run.model, images), expected, atol=1e-3)  # the bare network: neither


def test_evaluate_takes_a_run_and_its_recipe_and_needs_one_for_a_bare_network():
    run, data = tta_run(), digits()
    assert evaluate(run, data) == evaluate(Inference(run.model, run.info.normalization), data, run.recipe)
    accuracy = float((predict(run, data.images) == data.labels).float().mean())
    assert evaluate(run, data)["accuracy"] == pytest.approx(accuracy)
    with pytest.raises(CnnlabError, match=r"^evaluate needs the recipe the network was trained with"):
        evaluate(run.model, data)
    with pytest.raises(CnnlabError, match="expected a network .* not str"):
        predict("model", data.images)


@pytest.mark.parametrize("tta", ["flip", "flip-translate"])
def test_the_inside_view_ends_with_the_logits_the_bars_come_from(tta):
    """The issue: on a TTA run the bars said 7 (24.7 %) while softmax of the logits shown gave 8 (39.8 %)."""
    run, image = tta_run(tta), digits().images[0]
    layers = activations(run, image)
    assert [a.name for a in layers[:-1]] == ["input"] + [n for n, m in run.model.named_modules()
                                                          if next(m.children(), None) is None]
    last = layers[-1]
    assert (last.name, last.kind) == ("tta", "Mean") and "passes" in last.note
    bars = predict_proba(run, image[None])[0]
    assert torch.allclose(torch.softmax(last.values, dim=0), bars, atol=1e-6)
    first_pass = torch.softmax(layers[-2].values, dim=0)  # the image as it is, without its mirror
    assert not torch.allclose(first_pass, bars, atol=1e-4)



def test_evaluate_in_uneven_batches_gives_the_loss_and_accuracy_of_the_whole_set():
    """12 images in batches of 5, 5 and 2: each batch's mean loss weighed by its size, as one pass over all; the
    labels are the network's own answers for the first 7, so the accuracy is 7/12."""
    torch.manual_seed(0)
    model, images, recipe = create_model("cnn", SHAPE, 10).eval(), digits().images, get_recipe("mnist-cnn")
    with torch.no_grad():
        logits = model(images.float() / 255)
    labels = logits.argmax(1)
    labels[7:] = (labels[7:] + 1) % 10
    scores = evaluate(model, ImageSet(images, labels, tuple("0123456789")), recipe, batch_size=5)
    assert scores.loss == pytest.approx(loss_fn(logits, labels, recipe).item(), rel=1e-5)
    assert scores.accuracy == 7 / 12


def test_without_tta_the_last_layer_is_the_answer():
    run, image = tta_run("none"), digits().images[0]
    layers = activations(run, image)
    assert layers[-1].name == "dense_1" and layers[-1].note == ""
    assert torch.equal(torch.softmax(layers[-1].values, dim=0), predict_proba(run, image[None])[0])


def test_saliency_and_occlusion_explain_the_averaged_answer():
    run, image = tta_run("flip"), digits().images[0]
    target = int(predict_proba(run, image[None])[0].argmax())
    inputs = to_input(image[None], run.info.normalization).requires_grad_(True)
    mean = 0.5 * (run.model(inputs) + run.model(inputs.flip(3)))
    (gradient,) = torch.autograd.grad(mean[0, target], inputs)
    assert torch.allclose(saliency(run, image, target), gradient[0].abs().amax(dim=0), atol=1e-6)
    heat = occlusion(run, image, target)
    covered = image.clone()
    covered[:, 0:4, 0:4] = 0
    drop = predict_proba(run, image[None])[0, target] - predict_proba(run, covered[None])[0, target]
    assert float(heat[0, 0]) == pytest.approx(float(drop), abs=1e-6)  # the corner: one square covers it


def test_explain_predicts_as_predict_does_on_a_tta_run(tmp_path):
    run, image = tta_run("flip"), digits().images[0]
    explanation = explain_image(run, image, tmp_path, "an image")
    bars = predict_proba(run, image[None])[0]
    assert explanation.predicted == str(int(bars.argmax()))
    assert explanation.probability == pytest.approx(float(bars.max()), abs=1e-6)
    assert any("flip" in note and "2 passes" in note for note in explanation.notes)


def write_tta_run(folder: Path) -> Path:
    run = tta_run("flip")
    folder.mkdir(parents=True)
    save_run_files(folder, run.recipe, run.info, torch.device("cpu"))
    save_weights(folder / "weights.safetensors", run.model)
    return folder


def test_the_studio_shows_the_averaged_logits_under_its_bars(tmp_path):
    runs = tmp_path / "runs"
    write_tta_run(runs / "tta")
    buffer = io.BytesIO()
    Image.fromarray(digits().images[0, 0].numpy()).save(buffer, format="PNG")
    run = load_run(runs / "tta")
    image = prepare_file("upload.png", run.info.preprocess, run.info.in_shape, data=buffer.getvalue())
    with running_studio(runs) as url:
        import urllib.request

        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/runs/tta/look", buffer.getvalue())) as answer:
            look = json.loads(answer.read())
        with urllib.request.urlopen(urllib.request.Request(f"{url}/predict?run=tta&top=10", buffer.getvalue())) as r:
            predicted = json.loads(r.read())["predictions"]
    last = look["layers"][-1]
    assert (last["name"], last["kind"], last["shape"]) == ("tta", "Mean", [10]) and "passes" in last["note"]
    logits = activations(run, image)[-1].values
    probabilities = torch.softmax(logits, dim=0)
    assert [p["probability"] for p in look["predictions"]] == pytest.approx(
        [float(probabilities[p["class"]]) for p in look["predictions"]], abs=1e-6)
    assert [p["class"] for p in look["predictions"]] == [p["class"] for p in predicted]  # /predict agrees
    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(last["png"]))), dtype=np.float32)[0]
    shown = last["low"] + grey / 255 * (last["high"] - last["low"])
    assert np.abs(shown - logits.numpy()).max() <= (last["high"] - last["low"]) / 510 + 1e-5


@pytest.mark.parametrize("field, value", [("tta", "mirror"), ("autocast", "fp8"), ("engine", "turbo")])
def test_an_inference_with_an_unknown_mode_is_refused_when_made(field, value):
    """tta='mirror' was computed as 'none' without a word; autocast='fp8' failed with KeyError at the first batch."""
    with pytest.raises(CnnlabError, match=rf"^Inference {field}='{value}': choose one of "):
        Inference(create_model("mlp", SHAPE, 10), **{field: value})
