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


# The course's figure each training lab's comparison must show (LABS.md), and lab 4's exercise done as intended:
# the exercise's model cell with the intended change, trained again, then its check cell, run at the end.
COURSE_FIGURE = {"02-mnist-mlp": "0.9224", "03-mnist-cnn": "0.9433", "04-fashion-cnn": "0.9191",
                 "05-cifar10": "0.6804 (epoch 9)"}
LEARNER_DOES_LAB_4 = ('exercise_model = cnnlab.create_model("cnn-dropout"',
                      'exercise_model = cnnlab.create_model("cnn"')


def kernel_client(notebook, kernel_path: Path, work: Path, monkeypatch, **options) -> nbclient.NotebookClient:
    """A client for ``notebook`` on the tests' kernel, in ``work``, importing this checkout's cnnlab."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    return nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                                   resources={"metadata": {"path": str(work)}}, **options)


def texts(output) -> list[str]:
    """Every form of an output a person or a program reads: stream text, HTML, plain text, an error's lines."""
    data = output.get("data", {})
    return [text for text in (output.get("text"), data.get("text/html"), data.get("text/plain"),
                              "".join(output.get("traceback", []))) if text]


def shown(cell, mime: str = "text/html") -> str:
    return "".join(output.get("text") or output.get("data", {}).get(mime, "") for output in cell.outputs)


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
    checks = [cell for cell in notebook.cells if "check_exercise(" in cell.source]
    if path.stem == "04-fashion-cnn":  # the learner does the exercise: its cells again, with the intended change
        exercise = [cell for cell in notebook.cells if "exercise_model" in cell.source and cell not in checks]
        notebook.cells += [nbformat.v4.new_code_cell(cell.source.replace(*LEARNER_DOES_LAB_4)) for cell in exercise]
        notebook.cells.append(nbformat.v4.new_code_cell(checks[-1].source))
        assert LEARNER_DOES_LAB_4[1] in notebook.cells[-len(exercise) - 1].source
    work = tmp_path / "work"  # the kernel's working folder: the runs and images the notebook writes go here
    work.mkdir()
    kernel_client(notebook, kernel_path, work, monkeypatch).execute()  # raises CellExecutionError on any error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [text for output in outputs for text in texts(output) if "\x1b[" in text], "no ANSI codes"
    assert not [output for output in outputs if output.get("name") == "stderr"], "nothing written to stderr"
    assert not [output for output in outputs if output.output_type in ("display_data", "execute_result")
                and not any(text.strip() for text in texts(output))], "no empty output blocks"
    assert not [output for output in outputs if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    for check in checks:  # as stored, no exercise is done yet: each check says so, as a sentence
        assert shown(check, "text/plain").startswith("✗ Not yet: ")
    if path.stem == "01-images":
        return
    fit_cell = next(cell for cell in notebook.cells if "history = cnnlab.fit(" in cell.source)
    assert "Epoch 1/1 - " in shown(fit_cell) and " - val_accuracy: " in shown(fit_cell)  # Keras's lines, as text
    assert all(output.output_type == "stream" for output in fit_cell.outputs)  # the curves are drawn once, below
    curves = [cell for cell in notebook.cells if "plots.plot_curves(history" in cell.source]
    assert [len(cell.outputs) for cell in curves] == [1, 1] and all("image/png" in c.outputs[0].data for c in curves)
    summary = next(cell for cell in notebook.cells if "cnnlab.summarize(" in cell.source)
    assert "Total params" in summary.outputs[-1]["data"]["text/html"]
    predictions = next(cell for cell in notebook.cells if "plots.plot_predictions(" in cell.source)
    assert "image/png" in predictions.outputs[-1]["data"]  # the figure a plot helper returns, inline
    course = next(cell for cell in notebook.cells if "cnnlab.compare_with_course(" in cell.source)
    assert "the course</th><th>this run" in shown(course) and COURSE_FIGURE[path.stem] in shown(course)
    analysis = next(cell for cell in notebook.cells if "cnnlab.analyse(" in cell.source)
    assert "<th>precision</th>" in shown(analysis) and 'alt="the worst mistakes"' in shown(analysis)
    if path.stem == "04-fashion-cnn":  # the check passes on the intended change
        assert shown(notebook.cells[-1], "text/plain").startswith("✓ Done: at epoch 1, train accuracy minus")


def test_a_cnnlab_error_in_a_notebook_is_its_one_line_with_python_advice(tmp_path, kernel_path, monkeypatch):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "import cnnlab\nfrom cnnlab import data\n"
        "data.search_dirs = lambda spec, data_dir=None: []  # as if no folder held MNIST",
        'cnnlab.load_dataset("mnist", download=False)',
        "1 / 0")])
    kernel_client(notebook, kernel_path, tmp_path, monkeypatch, allow_errors=True).execute()
    [error] = notebook.cells[1].outputs
    assert error.output_type == "error" and error.ename == "CnnlabError"
    assert error.traceback == [f"CnnlabError: {error.evalue}"]  # one line, no frames
    assert "pass data_dir=FOLDER" in error.evalue and "--data-dir" not in error.evalue  # Python's terms
    [other] = notebook.cells[2].outputs
    assert other.ename == "ZeroDivisionError" and len(other.traceback) > 1  # any other error: IPython's own
