"""cnnlab: train, evaluate and look inside image classifiers — the Keras CNN labs, faithful and fast.

The Python API follows the tutorial's steps::

    import cnnlab
    train_all, test = cnnlab.load_dataset("fashion-mnist")
    train, val = cnnlab.split(train_all, val_fraction=0.2, seed=9)
    model = cnnlab.create_model("cnn-dropout", (1, 28, 28), 10)
    recipe = cnnlab.get_recipe("fashion-cnn")
    history = cnnlab.fit(model, train, val, recipe)
    cnnlab.evaluate(model, test, recipe)
    cnnlab.predict(model, test.images[:3])

Your own images: ``cnnlab.inspect_image(path)``, ``cnnlab.predict_files(cnnlab.load_run(run_dir), paths)``,
``cnnlab.train_recipe(recipe, folder=cnnlab.load_folder(path))``;
and past it, as the CLI does: ``evaluate_run``, ``explain_run``, ``write_report``, ``list_runs``, ``compare_runs``,
``export_onnx``, ``make_server``.
"""
__version__ = "0.1.0"

from .compare import compare_runs, list_runs  # noqa: E402
from .data import DATASETS, ImageSet, load_dataset, split  # noqa: E402
from .errors import CnnlabError, UsageError  # noqa: E402
from .evaluation import evaluate_run  # noqa: E402
from .explain import explain_run  # noqa: E402
from .export import export_onnx  # noqa: E402
from .images import inspect_image, load_folder, prepare, read_image  # noqa: E402
from .models import MODELS, create_model, summarize  # noqa: E402
from .predict import predict, predict_files, predict_proba  # noqa: E402
from .recipes import RECIPES, Recipe, get_recipe, with_overrides  # noqa: E402
from .report import write_report  # noqa: E402
from .runs import load_run, resume_run, train_recipe  # noqa: E402
from .serve import make_server  # noqa: E402
from .train import evaluate, fit  # noqa: E402

__all__ = [
    "DATASETS", "MODELS", "RECIPES", "CnnlabError", "ImageSet", "Recipe", "UsageError", "compare_runs",
    "create_model", "evaluate", "evaluate_run", "explain_run", "export_onnx", "fit", "get_recipe", "inspect_image",
    "list_runs", "load_dataset", "load_folder", "load_run", "make_server", "predict", "predict_files",
    "predict_proba", "prepare", "read_image", "resume_run", "split", "summarize", "train_recipe", "with_overrides",
    "write_report",
]
