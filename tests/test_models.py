"""Every registered model: builds, runs forward and backward, and has the tutorial's parameter counts."""
from __future__ import annotations

import math
import re

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, count_params, create_model, summarize

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


@pytest.mark.parametrize("in_shape", SHAPES)
def test_airbench_global_pool_matches_adaptive_max_pool_in_values_gradients_and_state_dict(in_shape):
    """GlobalMaxPool stands in for AdaptiveMaxPool2d(1): the same outputs, the same gradients (ties too),
    and the same state dict keys, so run folders written before the change still load."""
    torch.manual_seed(0)
    model = create_model("airbench", in_shape, 10)
    reference = create_model("airbench", in_shape, 10)
    reference.pool = torch.nn.AdaptiveMaxPool2d(1)
    reference.load_state_dict(model.state_dict())
    assert list(model.state_dict()) == list(reference.state_dict())
    model.eval(), reference.eval()  # BatchNorm's running statistics stay as loaded
    last_map = torch.nn.Sequential(*list(model)[:-4])(torch.rand(2, *in_shape))  # what reaches the pool
    assert last_map.shape[-2:] == (3, 3)
    maps = torch.randn(4, 8, 3, 3)
    maps[0, 0] = 1.0  # a map of ties: the whole gradient goes to the first, in both
    maps[1, 1, 2, :] = maps[1, 1].max() + 1  # a tie on the last row
    for pool in (model.pool, reference.pool):
        pool.inputs = maps.clone().requires_grad_()
        pool.outputs = pool(pool.inputs)
        (pool.outputs * torch.arange(32.0).view(4, 8, 1, 1)).sum().backward()
    assert torch.equal(model.pool.outputs, reference.pool.outputs)
    assert torch.equal(model.pool.inputs.grad, reference.pool.inputs.grad)
    images = torch.rand(3, *in_shape)
    assert torch.equal(model(images), reference(images))


def test_no_model_uses_a_layer_that_deterministic_cuda_refuses():
    """PyTorch documents the layers whose CUDA backward raises under use_deterministic_algorithms: no registered
    model may hold one, or `--deterministic` stops on the first GPU step."""
    doc = torch.use_deterministic_algorithms.__doc__
    refusing = doc[doc.index("operations will throw a"):].split("\n\n", 2)[1]
    refused = set(re.findall(r":class:`torch\.nn\.(\w+)` when attempting to differentiate a CUDA", refusing))
    assert "AdaptiveMaxPool2d" in refused  # the list was read
    for name in MODELS:
        layers = {type(module).__name__ for module in create_model(name, (3, 32, 32), 10).modules()}
        assert not layers & refused, f"{name} uses {layers & refused}"


@pytest.mark.parametrize("shape, message", [
    ((28, 28), r"^in_shape \(28, 28\): input_shape is \(channels, height, width\) in cnnlab: pass \(1, 28, 28\)$"),
    ((1, 28.0, 28), r"^in_shape \(1, 28\.0, 28\): expected \(channels, height, width\)"),
    ((3, 28, 28), r"^model expects 1×28×28 images, the data has 3×28×28"),
])
def test_summarize_with_a_wrong_shape_is_one_line(shape, message):
    """It raised PyTorch's own error from deep inside the forward pass."""
    with pytest.raises(CnnlabError, match=message):
        summarize(create_model("cnn", (1, 28, 28), 10), shape)
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # not built by create_model
    if len(shape) == 3 and all(isinstance(side, int) for side in shape):
        with pytest.raises(CnnlabError, match="^the model cannot take the data's 3×28×28 images"):
            summarize(bare, shape)
    assert len(summarize(bare, [1, 28, 28])) == 2
