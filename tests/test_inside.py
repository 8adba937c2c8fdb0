"""cnnlab.inside: every layer's activations and the explanation of one feature-map value, checked against the
model's own forward pass for every registered network with a convolution."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab import get_recipe
from cnnlab.errors import CnnlabError
from cnnlab.inside import activations, explain_value, quantise
from cnnlab.models import MODELS, create_model
from cnnlab.prediction import predict_proba
from cnnlab.runs import ModelInfo, Run

CONVOLUTIONAL = [name for name in MODELS if name != "mlp"]


def fake_run(model_name: str, seed: int = 0) -> Run:
    """An untrained run of ``model_name`` for CIFAR-sized images, BatchNorm statistics made non-trivial."""
    torch.manual_seed(seed)
    shape = (3, 32, 32)
    model = create_model(model_name, shape, 10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            nn.init.uniform_(module.bias, -0.3, 0.3)  # Keras starts them at 0: a wrong bias would go unseen
    info = ModelInfo(model_name, shape, tuple("abcdefghij"), "cifar10")
    return Run(Path("."), get_recipe("cifar10-cnn"), info, model.eval(), [], {})


def random_image(seed: int = 1, shape=(3, 32, 32)) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("model_name", CONVOLUTIONAL)
def test_the_last_activation_is_the_logits_of_the_prediction(model_name):
    run, image = fake_run(model_name), random_image()
    layers = activations(run, image)
    assert layers[0].name == "input" and layers[0].values.shape == image.shape
    assert [a.name for a in layers[1:]] == [n for n, m in run.model.named_modules() if next(m.children(), None) is None]
    probabilities = torch.softmax(layers[-1].values, dim=0)
    assert torch.allclose(probabilities, predict_proba(run, image[None])[0], atol=1e-5)


def test_the_labs_network_shapes():
    run = fake_run("cnn")
    shapes = [(a.name, tuple(a.values.shape)) for a in activations(run, random_image())]
    assert shapes == [("input", (3, 32, 32)), ("conv2d", (32, 32, 32)), ("relu", (32, 32, 32)),
                      ("max_pooling2d", (32, 16, 16)), ("flatten", (8192,)), ("dense", (128,)), ("relu_1", (128,)),
                      ("dense_1", (10,))]


@pytest.mark.parametrize("model_name", CONVOLUTIONAL)
def test_every_convolution_value_is_its_patch_times_kernel_plus_bias(model_name):
    run, image = fake_run(model_name), random_image()
    layers = {a.name: a.values for a in activations(run, image)}
    names = list(layers)
    convs = [n for n, m in run.model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for layer in convs:
        maps = layers[layer]
        channels, height, width = maps.shape
        for channel, row, col in [(0, 0, 0), (channels - 1, height - 1, width - 1), (channels // 2, height // 2, 1)]:
            v = explain_value(run, image, layer, channel, row, col)
            assert v.value == pytest.approx(float(maps[channel, row, col]), abs=1e-6)
            assert v.sum + v.bias == pytest.approx(v.value, abs=1e-4)
            products = torch.tensor(v.products)
            assert torch.allclose(products, torch.tensor(v.patch) * torch.tensor(v.kernel))
            assert (torch.tensor(v.patch)[:, torch.tensor(v.padded)] == 0).all()  # padding is zeros
            following = names[names.index(layer) + 1:]
            for step, name in zip(v.steps, following):  # the steps are the next layers, value by value
                assert step.name == name
                assert step.value == pytest.approx(float(layers[name][channel, row, col]), abs=1e-6)
            if v.pool is not None:
                pooled = layers[v.pool.name][channel]
                assert v.pool.value == pytest.approx(float(pooled[v.pool.position]), abs=1e-6)
                window = torch.tensor(v.pool.values)
                kept = window.max() if "Max" in v.pool.kind else window.mean()
                assert v.pool.value == pytest.approx(float(kept), abs=1e-5)


def test_the_corner_of_a_same_convolution_hangs_over_the_border():
    run, image = fake_run("cnn"), random_image()
    v = explain_value(run, image, "conv2d", 5, 0, 0)
    assert v.padded == [[True, True, True], [True, False, False], [True, False, False]]
    inputs = activations(run, image)[0].values
    assert torch.equal(torch.tensor(v.patch)[:, 1:, 1:], inputs[:, :2, :2])  # the image's own top-left corner
    assert [step.kind for step in v.steps] == ["ReLU"] and v.steps[0].value == max(0.0, v.value)
    assert v.pool.kind == "MaxPool2d" and (v.pool.top, v.pool.left, v.pool.position) == (0, 0, (0, 0))


def test_a_second_convolution_takes_the_first_ones_activations():
    run, image = fake_run("cnn-deep"), random_image()
    relu = {a.name: a.values for a in activations(run, image)}["relu"]
    v = explain_value(run, image, "conv2d_1", 3, 10, 20)
    assert torch.equal(torch.tensor(v.patch), relu[:, 9:12, 19:22]) and len(v.patch) == 32
    assert v.pool is None or v.pool.name == "max_pooling2d"


@pytest.mark.parametrize("layer, channel, row, col, message", [
    ("dense", 0, 0, 0, "layer 'dense': not a convolution of this network; choose one of conv2d"),
    ("nope", 0, 0, 0, "layer 'nope': not a convolution"),
    ("conv2d", 32, 0, 0, r"\(32, 0, 0\): outside conv2d's output of shape \(32, 32, 32\)"),
    ("conv2d", 0, -1, 0, "outside"),
])
def test_a_bad_choice_is_one_line(layer, channel, row, col, message):
    with pytest.raises(CnnlabError, match=message):
        explain_value(fake_run("cnn"), random_image(), layer, channel, row, col)


def test_quantised_maps_come_back_within_half_a_step():
    values = torch.randn(4, 5, 6) * 3
    q = quantise(values)
    grey = np.asarray(Image.open(io.BytesIO(q.png)))
    assert grey.shape == (20, 6) and grey.dtype == np.uint8  # the four maps stacked downwards
    back = q.low + torch.from_numpy(grey.astype(np.float32)).reshape(4, 5, 6) / 255 * (q.high - q.low)
    assert (back - values).abs().max() <= (q.high - q.low) / 510 + 1e-6
    assert (q.low, q.high) == (float(values.min()), float(values.max()))
    flat = quantise(torch.full((7,), 2.5))  # a constant vector: one row, all 0
    assert np.asarray(Image.open(io.BytesIO(flat.png))).tolist() == [[0] * 7] and flat.low == flat.high == 2.5
