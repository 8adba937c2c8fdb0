"""The fast engines compute what the plain one computes: the fused block, its gradients, a few steps of training."""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cnnlab import engines
from cnnlab.data import ImageSet
from cnnlab.errors import CnnlabError, UsageError
from cnnlab.inference import evaluate
from cnnlab.loop import OPTIMIZERS, fit, make_optimizer, place
from cnnlab.models import create_model
from cnnlab.recipes import RECIPES, Recipe, get_recipe, with_overrides

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def plain_block(images, weight, bias):
    return F.max_pool2d(F.relu(F.conv2d(images, weight, bias, padding=1)), 2)


def quantised_images(n: int, channels: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Pixels k/255 as the data sets give them, with flat patches (zeros, saturated) where the pooling window ties."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, channels, size, size), generator=generator)
    pixels[:, :, :4, :4] = 0
    pixels[:, :, -4:, -4:] = 255
    return pixels.float() / 255


@pytest.mark.parametrize("channels, kernels, chunk", [(1, 32, 32), (3, 5, 32), (1, 8, 4)])
def test_fused_block_matches_conv_relu_pool_and_its_gradients(channels, kernels, chunk):
    torch.manual_seed(0)
    images = quantised_images(6, channels)
    weight = torch.randn(kernels, channels, 3, 3, requires_grad=True)
    bias = (0.1 * torch.randn(kernels)).requires_grad_()
    upstream = torch.randn(6, kernels, 6, 6)

    expected = plain_block(images, weight, bias)
    expected.backward(upstream)
    expected_grads = weight.grad.clone(), bias.grad.clone()
    weight.grad = bias.grad = None
    got = engines.conv_relu_pool(images, weight, bias, chunk=chunk)  # 6 images: one piece, or pieces of 4 and 2
    got.backward(upstream)

    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad, expected_grads[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad, expected_grads[1], rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # evaluation takes the path that remembers no winners
        torch.testing.assert_close(engines.conv_relu_pool(images, weight, bias, chunk=chunk), expected.detach(),
                                   rtol=1e-5, atol=1e-5)


def test_fused_block_runs_under_bf16_autocast_as_the_plain_block_does():
    torch.manual_seed(0)
    images = quantised_images(6, 1)
    weight = torch.randn(8, 1, 3, 3, requires_grad=True)
    bias = (0.1 * torch.randn(8)).requires_grad_()
    results = []
    for block in (plain_block, engines.conv_relu_pool):
        weight.grad = bias.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(images, weight, bias)
        out.float().square().sum().backward()
        results.append((out.float(), weight.grad.clone(), bias.grad.clone()))
    (expected, *expected_grads), (got, *got_grads) = results
    assert weight.grad.dtype == bias.grad.dtype == torch.float32  # the parameters' own dtype
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)  # bf16 keeps 8 bits of mantissa
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=5e-2, atol=5e-2)


def test_ties_send_the_gradient_to_the_first_maximum_as_max_pooling_does():
    # A kernel that sees only its centre, on an image whose 2×2 cells repeat each value along their rows
    # (and, in half the cells, down the columns too): the offsets tie, but their 3×3 neighbourhoods differ,
    # so the kernel's gradient shows which offset won.
    cells = quantised_images(2, 1, size=5) + 0.01  # positive, so ReLU passes every window
    lower = cells + 0.25 * (torch.rand(cells.shape, generator=torch.Generator().manual_seed(1)) < 0.5)
    rows = torch.stack([cells, lower], dim=3).flatten(2, 3)  # (2, 1, 10, 5): top row, then bottom row
    images = rows.repeat_interleave(2, dim=3)  # (2, 1, 10, 10)
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 1] = 1.0
    weight.requires_grad_()
    bias = torch.zeros(1, requires_grad=True)
    upstream = torch.randn(2, 1, 5, 5)
    plain_block(images, weight, bias).backward(upstream)
    expected = weight.grad.clone()
    weight.grad = None
    engines.conv_relu_pool(images, weight, bias).backward(upstream)
    torch.testing.assert_close(weight.grad, expected)


def test_fast_forward_is_the_model_and_falls_back_where_it_cannot_fuse():
    torch.manual_seed(0)
    model = create_model("cnn-dropout", (1, 28, 28), 10).eval()
    images = torch.rand(5, 1, 28, 28)
    forward = engines.forward_fn(model, CPU, "fast")
    assert forward is not model
    torch.testing.assert_close(forward(images), model(images), rtol=1e-5, atol=1e-5)
    assert engines.forward_fn(model, CPU, "plain") is model
    mlp = create_model("mlp", (1, 28, 28), 10)
    assert engines.forward_fn(mlp, CPU, "fast") is mlp  # nothing to fuse or reorder: the model runs as written
    assert engines.forward_fn(model, torch.device("cuda"), "fast") is model  # cuDNN's kernels as they are



def test_fused_block_breaks_ties_in_max_poolings_scan_order_whichever_two_offsets_tie():
    """Binary images and a kernel of small integers: the four offsets of a window tie in every pattern (along a
    row, down a column, across a diagonal), and the kernel's gradient tells which offset won each."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 2, (8, 2, 10, 10), generator=generator).float()
    weight = torch.randint(-1, 2, (6, 2, 3, 3), generator=generator).float().requires_grad_()
    bias = torch.zeros(6, requires_grad=True)
    upstream = torch.randn(8, 6, 5, 5, generator=generator)
    plain_block(images, weight, bias).backward(upstream)
    expected = weight.grad.clone(), bias.grad.clone()
    weight.grad = bias.grad = None
    engines.conv_relu_pool(images, weight, bias).backward(upstream)
    torch.testing.assert_close((weight.grad, bias.grad), expected, rtol=1e-5, atol=1e-5)


def test_the_fast_forward_gives_an_image_gradient_while_the_weights_learn():
    """Saliency asks for the image's gradient; the fused block has none, so the fast forward must not take it."""
    torch.manual_seed(0)
    model = create_model("cnn", (1, 28, 28), 10)
    assert model[0].weight.requires_grad
    pixels, gradients = torch.rand(3, 1, 28, 28), []
    for run in (model, engines.forward_fn(model, CPU, "fast")):
        images = pixels.clone().requires_grad_()
        run(images).square().sum().backward()
        gradients.append(images.grad)
    assert gradients[1] is not None and gradients[0].abs().sum() > 0
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("block", [
    [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2, stride=1)],
    [torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU(), torch.nn.MaxPool2d(2)],
    [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2)],
], ids=["pool-stride-1", "reflect-padding", "average-pooling"])
def test_a_block_the_fused_kernel_does_not_compute_runs_as_written(block):
    """Your own network (fit takes any nn.Sequential): only Conv2d(3×3, zero padding) → ReLU → MaxPool2d(2, 2) is
    fused, and only ReLU → MaxPool2d swapped (ReLU then average is not average then ReLU)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*block, torch.nn.Flatten()).eval()
    images = torch.rand(2, 1, 8, 8) - 0.3
    with torch.no_grad():
        torch.testing.assert_close(engines.forward_fn(model, CPU, "fast")(images), model(images),
                                   rtol=1e-5, atol=1e-6)

def test_pooling_before_relu_gives_the_same_outputs_and_gradients():
    """Lab 5's network (ReLU → MaxPool after its second convolution), ties included: flat patches of the
    images give equal convolution outputs inside pooling windows, and negative ones windows that ReLU zeroes."""
    torch.manual_seed(0)
    model = create_model("cnn-deep", (3, 12, 12), 10).eval()
    layers = engines.pool_before_relu(list(model.children()))
    assert [type(layer).__name__ for layer in layers[2:6]] == ["Conv2d", "MaxPool2d", "ReLU", "Flatten"]
    forward = engines.forward_fn(model, CPU, "fast")
    images = quantised_images(6, 3) - 0.5
    outputs, grads = {}, {}
    for name, run in (("plain", model), ("fast", forward)):
        model.zero_grad(set_to_none=True)
        outputs[name] = run(images)
        outputs[name].square().sum().backward()
        grads[name] = {key: p.grad.clone() for key, p in model.named_parameters()}
    torch.testing.assert_close(outputs["fast"], outputs["plain"], rtol=0, atol=0)
    for key in grads["plain"]:
        torch.testing.assert_close(grads["fast"][key], grads["plain"][key], rtol=0, atol=0)
    assert any(grads["plain"][key].abs().sum() > 0 for key in grads["plain"])


def test_fast_engine_trains_convolutional_networks_channels_last_on_the_cpu():
    cnn, mlp = create_model("cnn-deep", (3, 8, 8), 10), create_model("mlp", (3, 8, 8), 10)
    assert engines.memory_format(cnn, CPU, "fast", channels_last=False) == torch.channels_last
    assert engines.memory_format(cnn, CPU, "plain", channels_last=False) == torch.contiguous_format
    assert engines.memory_format(mlp, CPU, "fast", channels_last=False) == torch.contiguous_format
    assert engines.memory_format(mlp, CPU, "plain", channels_last=True) == torch.channels_last  # the recipe asks


def tiny_split(n: int, seed: int, shape: tuple[int, int, int] = (1, 28, 28)) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images[labels % 2 == 0, :, 4:12, 4:12] = 255  # something to learn
    return ImageSet(images, labels, tuple("0123456789"))


# Lab 5's network trains channels-last under the fast engine; NHWC convolutions round differently from NCHW
# ones, which three epochs of Adam on noise amplify past 1e-4, so its plain run takes the same layout (the
# first-step gradients below compare the two layouts).
@pytest.mark.parametrize("recipe_name, shape, plain_channels_last", [
    ("fashion-cnn", (1, 28, 28), False), ("mnist-cnn", (1, 28, 28), False), ("cifar10-cnn", (3, 16, 16), True)])
def test_fast_and_plain_engines_train_along_the_same_path(recipe_name, shape, plain_channels_last):
    """Same seed, same data: per-epoch losses, accuracies and the final weights agree within float tolerance."""
    train, val = tiny_split(96, seed=1, shape=shape), tiny_split(40, seed=2, shape=shape)
    runs = {}
    for engine in ("plain", "fast"):
        recipe = replace(get_recipe(recipe_name), engine=engine, epochs=3, batch_size=16,
                         channels_last=plain_channels_last and engine == "plain").resolved()
        torch.manual_seed(0)
        model = create_model(recipe.model, shape, 10)
        history = fit(model, train, val, recipe, "cpu", verbose=False)
        runs[engine] = (history, model.state_dict())
    (plain_history, plain_weights), (fast_history, fast_weights) = runs["plain"], runs["fast"]
    assert plain_history[-1].loss < plain_history[0].loss  # it trained: the comparison is not of two stills
    for plain_row, fast_row in zip(plain_history, fast_history):
        assert fast_row.loss == pytest.approx(plain_row.loss, rel=1e-4)
        assert fast_row.val_loss == pytest.approx(plain_row.val_loss, rel=1e-4)
        # Float noise may flip the argmax of one near-tied image at the most.
        assert abs(fast_row.accuracy - plain_row.accuracy) <= 1 / len(train)
        assert abs(fast_row.val_accuracy - plain_row.val_accuracy) <= 1 / len(val)
    assert plain_weights.keys() == fast_weights.keys()  # the same model: run folders reload either way
    for key in plain_weights:
        torch.testing.assert_close(fast_weights[key], plain_weights[key], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name, shape", [("cnn", (1, 28, 28)), ("cnn-deep", (3, 16, 16))])
def test_first_step_gradients_agree(name, shape):
    """Each engine in its own layout (lab 5's network is channels-last under the fast engine)."""
    torch.manual_seed(0)
    model = create_model(name, shape, 10).eval()  # no dropout: both passes see the same network
    images, labels = torch.randint(0, 256, (32, *shape)).float() / 255, torch.randint(0, 10, (32,))
    grads = {}
    for engine in ("plain", "fast"):
        place(model, replace(get_recipe("fashion-cnn"), engine=engine), CPU)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(engines.forward_fn(model, CPU, engine)(images), labels).backward()
        grads[engine] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name in grads["plain"]:
        torch.testing.assert_close(grads["fast"][name], grads["plain"][name], rtol=1e-4, atol=1e-6)


def test_evaluate_gives_the_same_numbers_on_either_engine():
    torch.manual_seed(0)
    model = create_model("cnn-dropout", (1, 28, 28), 10)
    data = tiny_split(300, seed=3)
    plain = evaluate(model, data, replace(get_recipe("fashion-cnn"), engine="plain"))
    quick = evaluate(model, data, get_recipe("fashion-cnn"), batch_size=64)
    assert quick["accuracy"] == plain["accuracy"]
    assert quick["loss"] == pytest.approx(plain["loss"], rel=1e-5)


def test_optimizer_options_per_engine():
    model = create_model("mlp", (1, 28, 28), 10)
    adam = get_recipe("fashion-cnn")
    assert make_optimizer(replace(adam, engine="plain"), model).defaults["fused"] in (None, False)
    assert make_optimizer(adam, model).defaults["fused"] is True
    assert engines.optimizer_options(OPTIMIZERS["adam"], "graph", "cuda") == {"fused": True, "capturable": True}
    assert engines.optimizer_options(OPTIMIZERS["nadam"], "fast", "cpu") == {}  # no fused kernel: PyTorch's default


def test_fused_kernels_are_asked_for_only_where_that_pytorch_has_them():
    """Fused Adagrad is CPU-only in PyTorch 2.11 (the GPU machine's), so asking for it on CUDA there fails at the
    first step; the choice is a function of (optimiser, device type, version) and can be checked here."""
    adagrad = OPTIMIZERS["adagrad"]
    assert engines.optimizer_options(adagrad, "fast", "cuda", "2.11.0+cu128") == {}
    assert engines.optimizer_options(adagrad, "fast", "cpu", "2.11.0") == {"fused": True}
    assert engines.optimizer_options(adagrad, "fast", "cuda", "2.14.1+cu130") == {"fused": True}
    for name in ("sgd", "adam", "adamw"):
        assert engines.optimizer_options(OPTIMIZERS[name], "fast", "cuda", "2.11.0+cu128") == {"fused": True}
        assert engines.optimizer_options(OPTIMIZERS[name], "fast", "mps") == {}  # not claimed where unchecked
    # The table agrees with the installed PyTorch's own word on where fused Adagrad runs.
    documented = re.search(r"fused \(bool, optional\): whether the fused implementation(.*)is used",
                           torch.optim.Adagrad.__doc__).group(1)
    assert ("CUDA" in documented) == bool(engines.optimizer_options(adagrad, "fast", "cuda"))
    model = create_model("mlp", (1, 28, 28), 10)
    for name in OPTIMIZERS:  # and every kernel claimed for this machine's CPU builds and steps
        optimizer = make_optimizer(replace(get_recipe("fashion-cnn"), optimizer=name, lr=None), model)
        assert optimizer.defaults.get("fused") is (True if OPTIMIZERS[name].fused else None)
        model(torch.rand(2, 1, 28, 28)).sum().backward()
        optimizer.step()


def test_engine_is_checked_and_graph_needs_cuda():
    with pytest.raises(UsageError, match="engine='turbo': choose one of auto, fast, plain, graph"):
        with_overrides(get_recipe("mnist-mlp"), {"engine": "turbo"})
    with pytest.raises(UsageError, match="CUDA graphs need device cuda"):
        with_overrides(get_recipe("mnist-mlp"), {"engine": "graph", "device": "cpu"})
    with pytest.raises(CnnlabError, match="needs a CUDA device"):  # device 'auto' on a machine without one
        engines.cuda_graphed(lambda batch: None, 8, CPU, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))


def test_engine_auto_picks_cuda_graphs_where_a_card_has_run_them_and_names_the_rest():
    cuda = torch.device("cuda")  # only named: nothing runs on it
    for recipe in RECIPES.values():
        untried = engines.graph_untried(recipe)
        assert recipe.engine == "auto" and engines.pick_engine(cuda, recipe) == ("fast" if untried else "graph")
        note = engines.engine_note(cuda, engines.for_device(recipe, cuda))
        assert note is None if not untried else "have not yet been checked on a GPU (--set engine=graph" in note
        assert engines.pick_engine(CPU, recipe) == "fast"
        assert engines.engine_note(CPU, engines.for_device(recipe, CPU)) is None
    assert engines.graph_untried(get_recipe("fashion-cnn")) is None  # the labs: graphed, as on the H200
    assert engines.graph_untried(get_recipe("fashion-fast")) == \
        "a learning-rate schedule, flips and shifts"  # (its EMA is off) graphed on request only
    assert engines.pick_engine(cuda, replace(get_recipe("fashion-fast"), engine="graph")) == "graph"
    lab = get_recipe("fashion-cnn")
    assert engines.pick_engine(cuda, replace(lab, engine="plain")) == "plain"
    under_torchrun = engines.for_device(get_recipe("fashion-fast"), cuda, processes=2)
    assert under_torchrun.engine == "fast"
    assert "not DDP's across 2 processes, so the fast engine runs" in engines.engine_note(cuda, under_torchrun, 2)
    fp16 = engines.for_device(replace(lab, autocast="fp16"), cuda)
    assert fp16.engine == "fast" and "fp16's loss scaling" in engines.engine_note(cuda, fp16)
    with pytest.raises(UsageError, match="fp16's loss scaling"):
        with_overrides(lab, {"engine": "graph", "autocast": "fp16"})


def test_a_pytorch_that_cannot_register_generators_with_a_graph_runs_augmented_recipes_fast(monkeypatch):
    cuda = torch.device("cuda")  # only named
    monkeypatch.setattr(torch.cuda, "CUDAGraph", type("GraphWithoutGenerators", (), {}))
    augmented = engines.for_device(get_recipe("fashion-fast"), cuda)
    assert augmented.engine == "fast"
    assert "cannot give a CUDA graph fresh random flips and shifts, so the fast engine runs" in \
        engines.engine_note(cuda, augmented)
    assert engines.pick_engine(cuda, get_recipe("fashion-cnn")) == "graph"  # nothing to draw


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimiser_steps_alike_with_its_rate_lent_as_a_tensor(name):
    """What a graphed step does to the optimiser (cnnlab.engines.LearningRates), on the CPU: each optimiser, with
    the fast engine's options, takes a tensor rate and moves the weights as the float rate does, to the last digit."""
    moved = []
    for lend in (False, True):
        torch.manual_seed(0)
        model = create_model("mlp", (1, 28, 28), 10)
        optimizer = make_optimizer(replace(get_recipe("fashion-cnn"), optimizer=name, lr=None, engine="fast"), model)
        rates = engines.LearningRates(optimizer, CPU)
        for _ in range(3):
            for group in optimizer.param_groups:
                group["lr"] *= 0.9  # a schedule's next rate
            model(torch.rand(4, 1, 28, 28)).sum().backward()
            rates.fill()
            with rates.swapped_in() if lend else contextlib.nullcontext():
                optimizer.step()
            optimizer.zero_grad()
        moved.append(torch.cat([parameter.detach().flatten() for parameter in model.parameters()]))
    assert torch.equal(*moved)


def graph_logic_recipe(**changes):
    """fashion-fast shrunk, with everything a replayed step must read afresh: the triangle schedule, BatchNorm's
    own learning rate, EMA, flips, shifts, label smoothing, bf16 where the CPU has it."""
    fields = dict(epochs=2, batch_size=16, ema=0.9, translate=2, norm_lr_scale=4.0) | changes
    return replace(get_recipe("fashion-fast"), **fields).resolved()


def test_graph_step_logic_matches_the_fast_engine_on_the_cpu_to_the_last_digit(monkeypatch):
    """What the CUDA graph captures — the one training step, the learning rate lent as a device tensor filled from
    the schedule, the weight average's decay and the augmentation's draws made on the device — run uncaptured on
    the CPU gives the fast engine's history and weights bit for bit."""
    import functools

    monkeypatch.setattr(engines, "cuda_graphed", functools.partial(engines.cuda_graphed, capture=False))
    train, val = tiny_split(100, seed=1), tiny_split(40, seed=2)  # 6 full batches of 16 and one of 4
    results = {}
    for engine in ("fast", "graph"):
        recipe = graph_logic_recipe(engine=engine)
        torch.manual_seed(0)
        model = create_model(recipe.model, (1, 28, 28), 10)
        history = fit(model, train, val, recipe, device="cpu", verbose=False)
        results[engine] = ([(row.loss, row.accuracy, row.val_loss, row.val_accuracy) for row in history],
                           model.state_dict())
    assert results["graph"][0] == results["fast"][0]
    for name, tensor in results["fast"][1].items():
        assert torch.equal(results["graph"][1][name], tensor), name


def test_graph_step_logic_reads_the_schedule_each_step(monkeypatch):
    """The uncaptured graph step with the rate left at what it was captured with (no fill) trains differently:
    the check above would notice a replay that kept the first rate."""
    import functools

    monkeypatch.setattr(engines, "cuda_graphed", functools.partial(engines.cuda_graphed, capture=False))
    train, val = tiny_split(100, seed=1), tiny_split(40, seed=2)
    losses = {}
    for frozen in (False, True):
        if frozen:
            monkeypatch.setattr(engines.LearningRates, "fill", lambda self: None)  # the tensors stay at zero
        recipe = graph_logic_recipe(engine="graph", ema=0.0)
        torch.manual_seed(0)
        model = create_model(recipe.model, (1, 28, 28), 10)
        losses[frozen] = [row.loss for row in fit(model, train, val, recipe, device="cpu", verbose=False)]
    assert losses[True] != losses[False]


def assert_graph_follows_fast(recipe: Recipe, rel: float) -> None:
    """``recipe`` trained on CUDA under the fast engine, then graphed, from the same seed on the same 100 images
    (6 full batches of 16, replayed, and one of 4, eager): each epoch's losses agree within ``rel``."""
    train, val = tiny_split(100, seed=1), tiny_split(40, seed=2)
    histories = {}
    for engine in ("fast", "graph"):
        torch.manual_seed(0)
        model = create_model(recipe.model, (1, 28, 28), 10)
        histories[engine] = fit(model, train, val, replace(recipe, engine=engine).resolved(), device="cuda",
                                verbose=False)
    for fast_row, graph_row in zip(histories["fast"], histories["graph"]):
        assert graph_row.loss == pytest.approx(fast_row.loss, rel=rel)
        assert graph_row.val_loss == pytest.approx(fast_row.val_loss, rel=rel)

@pytest.mark.gpu
@needs_cuda
def test_graph_engine_trains_along_the_fast_path_on_cuda():
    """Full batches replayed as a CUDA graph, the short last batch eager: the same losses as the fast engine."""
    # Adam (capturable, fused) on the network without dropout, whose random masks a graph draws differently.
    assert_graph_follows_fast(replace(get_recipe("fashion-cnn"), model="cnn", epochs=3, batch_size=16), rel=1e-3)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("what", ["schedule", "ema", "augmentation"])
def test_graph_engine_replays_the_schedule_ema_and_augmentation_on_cuda(what):
    """Each of what a replayed step must read afresh, alone, graphed against the fast engine on CUDA: the same
    losses within 1 % (TF32, bf16 off; the draws come from the one generator, registered with the graph)."""
    changes = {"schedule": dict(schedule="linear", warmup=0.3), "ema": dict(ema=0.9),
               "augmentation": dict(flip=True, translate=2)}[what]
    assert_graph_follows_fast(replace(get_recipe("fashion-fast"), schedule="constant", ema=0.0, flip=False,
                                      translate=0, autocast="off", epochs=3, batch_size=16, **changes), rel=1e-2)


def test_fp16_backward_runs_on_a_scaled_loss_and_steps_on_unscaled_gradients(monkeypatch):
    """fp16 gradients of a batch-mean loss underflow: fit scales the loss up for the backward pass (GradScaler's
    2**16 at first) and the gradients back down before the optimiser's step. fp16 autocast is refused off CUDA, so
    here the CPU's fp16 autocast stands in for it."""
    from cnnlab import inference, loop

    monkeypatch.setattr(engines, "pick_autocast", lambda device, precision: precision)  # fp16 let through
    for module in (loop, inference):  # the training step's and the validation's
        monkeypatch.setattr(module, "autocast", lambda device, precision, **options: torch.autocast(
            "cpu", dtype=torch.float16, enabled=precision == "fp16"))
    data = tiny_split(32, seed=4)
    gradients, moves = {}, {}
    for precision in ("off", "fp16"):  # one step of plain SGD, whose step is proportional to the gradient
        recipe = replace(get_recipe("mnist-mlp"), engine="plain", epochs=1, batch_size=32, optimizer="sgd", lr=0.1,
                         momentum=0.0, autocast=precision)
        torch.manual_seed(0)
        model = create_model("mlp", (1, 28, 28), 10)
        before = model.dense_1.weight.detach().clone()
        seen = gradients.setdefault(precision, [])
        model.dense_1.weight.register_post_accumulate_grad_hook(
            lambda p, seen=seen: seen.append(p.grad.abs().max().item()))
        fit(model, data, data, recipe, "cpu", verbose=False)
        moves[precision] = model.dense_1.weight.detach() - before
    assert gradients["fp16"][0] / gradients["off"][0] == pytest.approx(2.0 ** 16, rel=1e-2)  # the backward's
    assert moves["off"].abs().max() > 0
    assert torch.allclose(moves["fp16"], moves["off"], rtol=1e-2, atol=1e-2 * moves["off"].abs().max().item())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])  # Adagrad: no fused CUDA kernel in PyTorch 2.11
def test_fp16_trains_on_cuda_with_the_fast_engine(optimizer):
    train, val = tiny_split(200, seed=1), tiny_split(40, seed=2)
    recipe = replace(get_recipe("fashion-cnn"), optimizer=optimizer, lr=None, autocast="fp16", epochs=3,
                     batch_size=32).resolved()
    torch.manual_seed(0)
    history = fit(create_model(recipe.model, (1, 28, 28), 10), train, val, recipe, device="cuda", verbose=False)
    assert history[-1].loss < history[0].loss and all(math.isfinite(row.val_loss) for row in history)


def test_fp16_is_refused_with_cuda_graphs():
    with pytest.raises(UsageError, match="CUDA graphs cannot replay fp16's loss scaling: use autocast=bf16"):
        with_overrides(get_recipe("fashion-fast"), {"engine": "graph", "device": "cuda", "autocast": "fp16"})
