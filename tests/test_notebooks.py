"""The labs/ notebooks stay true: each runs top to bottom in a fresh kernel on this Python, at one epoch on
local data, and each is stored without outputs so its diff shows only what a person wrote."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import FASHION_SYSTEM, MNIST_SAMPLE, REPO, make_cifar_dataset, write_idx

pytestmark = pytest.mark.slow  # each notebook runs in a Jupyter kernel: `make quick` leaves them out

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need cnnlab[test]'s nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need cnnlab[test]'s nbclient")
pytest.importorskip("ipykernel", reason="the notebook tests need cnnlab[test]'s ipykernel")

LABS = REPO / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
KERNEL = "cnnlab-test"
# Where each lab finds its data at one epoch: the real sets where this machine has them, Fashion-MNIST cut to
# 5,000 + 1,000 images (three trainings on 48,000 would make the file too slow for CI); "cifar": written here.
DATA = {"01-images": MNIST_SAMPLE, "02-mnist-mlp": MNIST_SAMPLE, "03-mnist-cnn": MNIST_SAMPLE,
        "04-fashion-cnn": FASHION_SYSTEM, "05-cifar10": "cifar"}
FASHION_SLICE = (5000, 1000)  # the first training and test images kept


def fashion_slice(folder: Path) -> Path:
    """The first images of the real Fashion-MNIST, in its own file format."""
    from cnnlab.data import load_dataset

    folder.mkdir()
    for part, prefix, n in zip(load_dataset("fashion-mnist", FASHION_SYSTEM, download=False), ("train", "t10k"),
                               FASHION_SLICE):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", part.images[:n, 0].numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", part.labels[:n].numpy())
    return folder


def test_the_five_labs_are_there():
    assert [path.stem for path in NOTEBOOKS] == list(DATA)


def parameter_cell(notebook) -> int:
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters'"
    return tagged[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
    names: dict = {}
    exec(notebook.cells[parameter_cell(notebook)].source, names)
    assert names["EPOCHS"] == 10 and names["DATA_DIR"] is None  # the course's epochs, cnnlab's own data lookup


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A kernel spec that starts ipykernel on the Python running the tests (the project's venv)."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnnlab tests", "language": "python"}))
    return folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, tmp_path, kernel_path, monkeypatch):
    data_dir = DATA[path.stem]
    if data_dir == "cifar":
        data_dir = make_cifar_dataset(tmp_path / "cifar", n_per_batch=40)
    elif not (data_dir / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{data_dir} is not on this machine")
    elif data_dir == FASHION_SYSTEM:
        data_dir = fashion_slice(tmp_path / "fashion-mnist")
    notebook = nbformat.read(path, as_version=4)
    at = parameter_cell(notebook)
    injected = nbformat.v4.new_code_cell(f"EPOCHS = 1\nDATA_DIR = {str(data_dir)!r}",
                                         metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(at + 1, injected)  # after the defaults, as papermill does
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    work = tmp_path / "work"  # the kernel's working folder: the runs and images the notebook writes go here
    work.mkdir()
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    # what a notebook displays of each output: the text, else its HTML, else plain text
    shown = [output.get("text") or output.get("data", {}).get("text/html")
             or output.get("data", {}).get("text/plain", "") for output in outputs]
    assert not [text for text in shown if "\x1b[" in text]  # rich drew for Jupyter, not a terminal's escape codes
    assert not [output for output in outputs if output.get("name") == "stderr"], "nothing written to stderr"
    if path.stem != "01-images":
        fit_cell = next(cell for cell in notebook.cells if "cnnlab.fit(" in cell.source)
        shown = "".join(output.get("data", {}).get("text/html", "") for output in fit_cell.outputs)
        assert "val_accuracy" in shown and "data:image/png;base64," in shown  # the history: table and curves
        summary = next(cell for cell in notebook.cells if "cnnlab.summarize(" in cell.source)
        assert "Total params" in summary.outputs[-1]["data"]["text/html"]
        predictions = next(cell for cell in notebook.cells if "plots.plot_predictions(" in cell.source)
        assert "image/png" in predictions.outputs[-1]["data"]  # the figure a plot helper returns, inline
