"""cnnlab.device: one device rule. Names and torch.devices alike, fit on the recipe's device, a user's model left
where and as it was, and the commands that never train kept apart from the training loop (issue #19)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import cnnlab
from cnnlab import errors
from cnnlab.data import ImageSet
from cnnlab.device import borrowed, choose_device, resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.inference import evaluate
from cnnlab.loop import fit
from cnnlab.models import create_model
from cnnlab.prediction import predict, predict_proba
from cnnlab.recipes import get_recipe
from helpers import REPO
from test_imports import import_graph

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny(n: int = 16, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.arange(n) % 10, tuple("0123456789"))


def test_resolve_device_names_the_missing_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(errors, "COMMAND_LINE", True)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(CnnlabError, match=f"--device {name}: no CUDA device is available here; use --device cpu"):
            resolve_device(name)
    with pytest.raises(CnnlabError, match="--device mps: Apple's MPS is not available here; use --device cpu"):
        resolve_device("mps")
    monkeypatch.setattr(errors, "COMMAND_LINE", False)  # in Python: the argument's name
    with pytest.raises(CnnlabError, match="^device cuda:1: no CUDA device is available here; use device='cpu'"):
        resolve_device(torch.device("cuda:1"))
    with pytest.raises(CnnlabError, match=r"^device 'gpu': choose auto, cpu, cuda, cuda:N or mps$"):
        resolve_device("gpu")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")  # CUDA first, then MPS, then the CPU


def test_resolve_device_is_public_and_takes_a_torch_device():
    assert cnnlab.resolve_device is resolve_device and "resolve_device" in cnnlab.__all__
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    model = create_model("mlp", (1, 28, 28), 10)
    assert choose_device(None, model) == torch.device("cpu")  # where the model is
    assert choose_device(None, otherwise="cpu") == torch.device("cpu")
    assert choose_device(torch.device("cpu"), model) == choose_device("cpu", model)


def test_fit_trains_where_the_recipe_says_when_no_device_is_given(monkeypatch):
    """fit ignored recipe.device and trained on the CPU: a recipe asking for CUDA on a machine without one
    trained silently instead of saying so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = tiny()
    recipe = replace(get_recipe("mnist-mlp"), epochs=1, batch_size=8, device="cuda")
    with pytest.raises(CnnlabError, match="cuda: no CUDA device is available here"):
        fit(create_model("mlp", (1, 28, 28), 10), data, data, recipe, verbose=False)
    history = fit(create_model("mlp", (1, 28, 28), 10), data, data, recipe, torch.device("cpu"), verbose=False)
    assert len(history) == 1  # a device passed wins over the recipe's


def test_predict_leaves_the_users_model_where_and_as_it_was():
    """predict put the model in eval mode (and on the CPU) and left it so."""
    model = create_model("cnn-dropout", (1, 28, 28), 10).train()
    images = tiny().images
    predict_proba(model, images)
    assert model.training
    evaluate(model, tiny(), get_recipe("fashion-cnn"))
    assert model.training
    model.eval()
    predict(model, images, device="cpu")
    assert not model.training
    with borrowed(model.train(), "cpu") as device:
        assert device == torch.device("cpu") and not model.training
    assert model.training


def test_every_public_function_takes_a_name_a_torch_device_or_none():
    torch.manual_seed(0)
    model = create_model("cnn", (1, 28, 28), 10)
    images, recipe = tiny().images, get_recipe("mnist-cnn")
    expected = predict_proba(model, images)
    for device in ("cpu", torch.device("cpu"), None):
        assert torch.equal(predict_proba(model, images, device), expected)
        assert evaluate(model, tiny(), recipe, device) == evaluate(model, tiny(), recipe)


@pytest.mark.gpu
@needs_cuda
def test_a_model_on_the_gpu_is_predicted_there_and_stays_there():
    model = create_model("cnn", (1, 28, 28), 10).cuda()
    images = tiny().images
    on_gpu = predict_proba(model, images)
    assert next(model.parameters()).is_cuda
    on_cpu = predict_proba(model, images, device="cpu")  # borrowed for the call, then put back
    assert next(model.parameters()).is_cuda and torch.allclose(on_gpu, on_cpu, atol=1e-4)
    assert evaluate(model, tiny(), get_recipe("mnist-cnn"), torch.device("cpu"))["loss"] == \
        pytest.approx(evaluate(model, tiny(), get_recipe("mnist-cnn"))["loss"], rel=1e-4)
    assert next(model.parameters()).is_cuda


def test_commands_that_never_train_do_not_import_the_training_loop():
    graph = import_graph()

    def reach(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    for module in ("prediction", "explain", "inside", "export", "serve", "report", "studio", "evaluation",
                   "inference", "device"):
        assert not {"loop", "train"} & reach(module), module


def test_the_labs_use_public_names_for_the_device_and_the_input_rule():
    for path in sorted((REPO / "labs").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        source = "".join("".join(cell["source"]) for cell in notebook["cells"])
        assert "from cnnlab.loop import" not in source and "cnnlab.loop." not in source, path.name
        assert all(not cell.get("outputs") for cell in notebook["cells"]), path.name  # stored without outputs


def test_fp16_training_off_cuda_is_refused_before_a_run_folder_is_made(fake_mnist, tmp_path, capsys):
    from cnnlab import cli

    runs = tmp_path / "runs"
    assert cli.main(["train", "mnist-mlp", "--epochs", "1", "--set", "autocast=fp16", "--device", "cpu",
                     "--data-dir", str(fake_mnist), "--runs-dir", str(runs)]) == 1
    assert capsys.readouterr().err == ("cnnlab: error: --set autocast=fp16 needs a CUDA device, not cpu; use bf16 "
                                       "or off\n")
    assert not runs.exists() or not any(runs.iterdir())  # it stopped before a folder: nothing to tidy or resume
    with pytest.raises(CnnlabError, match="autocast fp16 needs a CUDA device"):  # and fit, from Python
        fit(create_model("mlp", (1, 28, 28), 10), tiny(), tiny(seed=1),
            replace(get_recipe("mnist-mlp"), autocast="fp16"), "cpu", verbose=False)


def test_a_run_trained_in_fp16_on_a_gpu_predicts_in_fp32_elsewhere(digit_run):
    """fp16 is a training precision CUDA alone has; the network it made is fp32 weights that any device runs."""
    images = tiny(4).images
    before = predict_proba(cnnlab.load_run(digit_run), images, "cpu")
    recipe = json.loads((digit_run / "recipe.json").read_text())
    (digit_run / "recipe.json").write_text(json.dumps({**recipe, "autocast": "fp16"}))
    assert torch.equal(predict_proba(cnnlab.load_run(digit_run), images, "cpu"), before)
