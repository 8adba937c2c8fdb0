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

A run predicts as it was evaluated, with its normalisation, test-time augmentation and precision:
``cnnlab.predict(cnnlab.load_run(run_dir), images)``, images uint8 0–255 or floats in [0, 1] (the input rule of
``fit`` and ``evaluate`` too: ``cnnlab.data.check_pixels``). ``device`` is a name ('auto', 'cpu', 'cuda:0') or a
torch.device; left out, a model computes where it is and ``fit`` trains where the recipe says
(``cnnlab.resolve_device`` reads a name).

Coming from Keras, its calls work as they are: NumPy arrays, channels-last and one-hot
(``cnnlab.fit(model, x, y, "fashion-cnn", epochs=10, validation_data=(x_val, y_val))``, ``cnnlab.evaluate(model, x, y,
recipe)``, ``cnnlab.predict_proba(model, x)``), ``cnnlab.load_data`` as keras.datasets gives them (docs/guide.md).

Your own images: ``cnnlab.inspect_image(path)``, ``cnnlab.train_folder(path)`` (``from_run=RUN``: starting from
a network you trained),
``cnnlab.predict_files(cnnlab.load_run(run_dir), paths)``; and past it, as the CLI does: ``evaluate_run``,
``explain_run``, ``write_report``, ``list_runs``, ``compare_runs``, ``export_onnx``, ``make_server``, each taking
a run folder or its ``cnnlab.Run``.
"""
__version__ = "0.1.0"

import sys as _sys

from . import threads as _threads

_threads.configure()  # OpenMP's thread count, before anything imports torch (cnnlab.threads)

# Each name is imported from its module on first use (PEP 562), so `import cnnlab` and the commands that
# only read files start without PyTorch.
_HOMES = {
    "compare": ("compare_runs",),
    "data": ("DATASETS", "ImageSet", "load_data", "load_dataset", "split", "to_categorical"),
    "device": ("resolve_device",),
    "errors": ("CnnlabError", "UsageError"),
    "course": ("compare_with_course",),
    "evaluation": ("analyse", "evaluate_run"),
    "explain": ("explain_run",),
    "export": ("export_onnx",),
    "images": ("inspect_image", "load_folder", "prepare", "read_image"),
    "inference": ("Inference", "Scores", "evaluate", "to_input"),
    "models": ("MODELS", "create_model", "summarize"),
    "prediction": ("predict", "predict_files", "predict_proba"),
    "recipes": ("RECIPES", "Recipe", "get_recipe", "with_overrides"),
    "report": ("write_report",),
    "runs": ("Run", "list_runs", "load_run"),
    "serve": ("make_server",),
    "train": ("resume_run", "train_folder", "train_recipe"),
    "loop": ("fit",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if "IPython" in _sys.modules:  # inside IPython or Jupyter: a CnnlabError as one line (cnnlab.notebook)
    from . import notebook as _notebook

    _notebook.install()
