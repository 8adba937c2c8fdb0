"""The tests' fixtures: small data sets in the real file formats, a trained run, the studio's decoding held, the
browser. What they build on (writers, comparisons, the studio on a free port) is in helpers.py."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import BROWSER_ARGS, CHROMIUM, HeldDecode, Watched, make_cifar_dataset, make_idx_dataset

# cuBLAS reads this once, at the process's first product on the GPU, which some test does before the
# deterministic ones run: set here, before any test, as `cnnlab train --deterministic` sets it at its start.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# The tests compare runs to the last digit, so they train on a fixed thread count rather than give way to
# whatever else the machine runs (cnnlab.threads.FairShare, which tests/test_threads.py checks on its own).
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):  # `make quick`: pytest-xdist, a worker a core
    # A share of the cores each, but two at least: lab 5's fast-against-plain comparison (three epochs of Adam,
    # whose steps are ±lr wherever a gradient is float noise) holds to 1e-4 on two threads, not on one.
    torch.set_num_threads(max(2, torch.get_num_threads() // workers))
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty user cache and no CNNLAB_DATA, so nothing leaks between tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    return make_idx_dataset(tmp_path / "mnist")


@pytest.fixture
def fake_cifar(tmp_path) -> Path:
    return make_cifar_dataset(tmp_path / "cifar")


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def digit_run(tmp_path) -> Path:
    """A run folder of an untrained MLP for MNIST digits: written directly, no training needed."""
    from cnnlab import get_recipe
    from cnnlab.models import create_model
    from cnnlab.runs import ModelInfo, save_run_files, save_weights

    run_dir = tmp_path / "digit-run"
    run_dir.mkdir()
    torch.manual_seed(0)
    model = create_model("mlp", (1, 28, 28), 10)
    save_run_files(run_dir, get_recipe("mnist-mlp"), ModelInfo("mlp", (1, 28, 28), tuple("0123456789"), "mnist"),
                   torch.device("cpu"))
    save_weights(run_dir / "weights.safetensors", model)
    return run_dir


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """A CNN and an MLP trained briefly on fake digits (enough to learn them), and the data folder.

    Shared by the tests that look at finished runs; a test that writes into a run should copy it first.
    """
    from cnnlab import get_recipe, train_recipe, with_overrides

    data = make_idx_dataset(tmp_path_factory.mktemp("data") / "mnist")
    runs = tmp_path_factory.mktemp("runs")
    settings = {"optimizer": "adam", "batch_size": 32, "device": "cpu"}
    return {"data": data,
            "cnn": train_recipe(with_overrides(get_recipe("mnist-cnn"), {**settings, "epochs": 2}), data, runs, False),
            "mlp": train_recipe(with_overrides(get_recipe("mnist-mlp"), {**settings, "epochs": 3}), data, runs, False)}


@pytest.fixture
def held_decode(monkeypatch) -> Iterator[HeldDecode]:
    """``images.prepare_file`` held for one upload, as the decoding of a large image holds its thread; it is
    refused at last with 'request body: decoded at last'. Every other image is prepared as ever."""
    from cnnlab import images
    from cnnlab.errors import CnnlabError

    held, prepare_file = HeldDecode(), images.prepare_file

    def slow_to_decode(path, method, shape, data=None):
        if data == held.body:
            held.decoding.set()
            held.done.wait(timeout=30)
            raise CnnlabError("request body: decoded at last")
        return prepare_file(path, method, shape, data=data)

    monkeypatch.setattr(images, "prepare_file", slow_to_decode)
    yield held
    held.done.set()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's browser is Debian's chromium: Playwright's own download cannot work offline."""
    if CHROMIUM is None:
        pytest.skip("no chromium here: `apt-get install chromium` (.ci/run does) to run the browser tests")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": BROWSER_ARGS}


@pytest.fixture
def watched(page) -> Watched:
    seen = Watched(page)
    page.on("console", lambda message: message.type == "error" and seen.problems.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: seen.problems.append(f"exception: {error}"))
    page.on("requestfailed", lambda request: seen.problems.append(f"failed: {request.url} {request.failure}"))
    page.on("response", lambda response: response.status >= 400 and
            seen.problems.append(f"HTTP {response.status}: {response.url}"))
    return seen
