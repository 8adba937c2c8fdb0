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


def test_a_network_too_large_to_build_is_refused_before_any_memory_is_taken():
    """A dense layer over the whole image grows with its pixels: cnn on 4096×4096 would be 68 GB of weights, which
    failed inside PyTorch's allocator (or, below the machine's memory, was built and then swapped)."""
    with pytest.raises(CnnlabError, match=r"^cnn for 1×4096×4096 images would have 17,179,870,922 parameters, more "
                                          r"than the 500,000,000 cnnlab builds; use smaller images \(size=\)"):
        create_model("cnn", (1, 4096, 4096), 10)
    assert count_params(create_model("airbench", (3, 256, 256), 10)) == 1_972_792  # global pooling: any size


@pytest.mark.parametrize("name, in_shape", [("airbench", (1, 4, 4)), ("cnn", (1, 1, 8)), ("bn-cnn", (3, 3, 3))])
def test_images_too_small_for_a_network_are_refused_when_it_is_built(name, in_shape):
    with pytest.raises(CnnlabError, match=f"^{name} cannot take images as small as {'×'.join(map(str, in_shape))}: "
                                          r"its layers shrink them below one pixel; use larger images \(size=\)"):
        create_model(name, in_shape, 3)


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


@pytest.mark.parametrize("classes", [0, 2.5, "10", True])
def test_a_class_count_that_is_not_one_or_more_is_one_line(classes):
    """2.5, '10' and True failed inside torch.empty; 0 was refused as images too small for the network."""
    with pytest.raises(CnnlabError, match=rf"^num_classes={re.escape(repr(classes))}: pass the number of classes"):
        create_model("mlp", (1, 28, 28), classes)


class _Pair(torch.nn.Module):
    """A user's own network whose forward returns the logits and something else."""

    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(784, 10)

    def forward(self, images):
        return self.dense(images.flatten(1)), images


class _NoWeights(torch.nn.Module):
    def forward(self, images):
        return images.flatten(1)[:, :10]


def _fit(model):
    import cnnlab

    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    return cnnlab.fit(model, images, torch.arange(20) % 10, "mnist-mlp", device="cpu", epochs=1,
                      validation_split=0.5, verbose=False)


def test_a_network_that_does_not_return_logits_is_one_line_from_fit_and_predict():
    """A tuple failed with AttributeError 'tuple' object has no attribute 'shape'; summarize still lists it."""
    import cnnlab

    message = ("the model's forward returns tuple for one image, not logits (1, classes): return one tensor "
               "(N, classes), its raw scores before the softmax")
    with pytest.raises(CnnlabError, match=re.escape(message)):
        _fit(_Pair())
    with pytest.raises(CnnlabError, match=re.escape(message)):
        cnnlab.predict(_Pair(), torch.zeros(2, 1, 28, 28))
    assert "dense (Linear)" in str(summarize(_Pair(), (1, 28, 28)))


@pytest.mark.parametrize("model", [_NoWeights(), create_model("mlp", (1, 28, 28), 10).requires_grad_(False)])
def test_fit_refuses_a_network_with_nothing_to_learn(model):
    """No parameters failed with StopIteration, all frozen with 'element 0 of tensors does not require grad'."""
    with pytest.raises(CnnlabError, match="has no weights that learn"):
        _fit(model)


def test_fit_refuses_what_is_not_a_network():
    """A function or a model's name failed with AttributeError ... 'parameters'."""
    with pytest.raises(CnnlabError, match=r"^fit trains a network \(a torch.nn.Module\), not str"):
        _fit("mlp")


def test_a_network_on_the_meta_device_is_one_line():
    """fit failed with NotImplementedError 'Cannot copy out of meta tensor', predict with 'unsupported
    scalarType'."""
    import cnnlab

    model = create_model("mlp", (1, 28, 28), 10).to("meta")
    for call in (lambda: _fit(model), lambda: cnnlab.predict(model, torch.zeros(2, 1, 28, 28))):
        with pytest.raises(CnnlabError, match="^the model's weights are on the meta device"):
            call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_network_in_another_precision_is_one_line_before_it_computes(dtype):
    """model.half() or .double() failed inside the first Linear: 'mat1 and mat2 must have the same dtype'."""
    import cnnlab

    model = create_model("mlp", (1, 28, 28), 10).to(dtype)
    message = rf"^the model's weights are {str(dtype).removeprefix('torch.')}; .* call model.float\(\) first$"
    for call in (lambda: _fit(model), lambda: cnnlab.predict(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8))):
        with pytest.raises(CnnlabError, match=message):
            call()


def test_summarize_lists_a_network_without_weights():
    """It failed with a bare StopIteration looking for a weight's device."""
    text = str(summarize(_NoWeights(), (1, 28, 28)))
    assert "Total params: 0" in text
