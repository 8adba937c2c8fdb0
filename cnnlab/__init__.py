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
"""
__version__ = "0.1.0"

from .data import DATASETS, ImageSet, load_dataset, split  # noqa: E402
from .errors import CnnlabError, UsageError  # noqa: E402
from .models import MODELS, create_model, summarize  # noqa: E402
from .predict import predict, predict_proba  # noqa: E402
from .recipes import RECIPES, Recipe, get_recipe, with_overrides  # noqa: E402
from .runs import load_run, resume_run, train_recipe  # noqa: E402
from .train import evaluate, fit  # noqa: E402

__all__ = [
    "DATASETS", "MODELS", "RECIPES", "CnnlabError", "ImageSet", "Recipe", "UsageError", "create_model", "evaluate",
    "fit", "get_recipe", "load_dataset", "load_run", "predict", "predict_proba", "resume_run", "split",
    "summarize", "train_recipe", "with_overrides",
]
