"""Every registered model: builds, runs forward and backward, and has the tutorial's parameter counts."""
from __future__ import annotations

import math

import pytest
import torch

from cnnlab.models import MODELS, count_params, create_model, summarize
from cnnlab.errors import CnnlabError

SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("in_shape", SHAPES)
def test_forward_backward(name, in_shape):
    torch.manual_seed(0)
    model = create_model(name, in_shape, 10)
    images = torch.rand(4, *in_shape)
    logits = model(images)
    assert logits.shape == (4, 10)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]  # airbench freezes its whitening and scales
    assert trainable
    for parameter in trainable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("name, in_shape, layer_params, total", [
    ("mlp", (1, 28, 28), [401_920, 5_130], 407_050),
    ("cnn", (1, 28, 28), [320, 802_944, 1_290], 804_554),
    ("cnn-dropout", (1, 28, 28), [320, 802_944, 1_290], 804_554),
    ("cnn-deep", (3, 32, 32), [896, 18_496, 2_097_280, 8_256, 650], 2_125_578),
])
def test_tutorial_parameter_counts(name, in_shape, layer_params, total):
    model = create_model(name, in_shape, 10)
    rows = summarize(model, in_shape)
    assert [row.params for row in rows if row.params] == layer_params
    assert count_params(model) == total


def test_summary_output_shapes_show_padding_and_pooling():
    rows = {row.name: row for row in summarize(create_model("cnn", (1, 28, 28), 10), (1, 28, 28))}
    assert rows["conv2d"].output_shape == (32, 28, 28)  # 'same' padding keeps 28×28
    assert rows["max_pooling2d"].output_shape == (32, 14, 14)  # 2×2 pooling halves it
    assert rows["flatten"].output_shape == (6272,)


def test_keras_initialisation():
    torch.manual_seed(1)
    model = create_model("cnn", (1, 28, 28), 10)
    dense = model.dense
    bound = math.sqrt(6 / (6272 + 128))  # Glorot-uniform limit
    assert dense.weight.abs().max() <= bound and dense.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(dense.bias) == 0
    conv_bound = math.sqrt(6 / (1 * 9 + 32 * 9))  # the receptive field counts in both fans, as in Keras
    assert model.conv2d.weight.abs().max() <= conv_bound


def test_unknown_model():
    with pytest.raises(CnnlabError, match="unknown model 'resnet9000'"):
        create_model("resnet9000", (1, 28, 28), 10)
