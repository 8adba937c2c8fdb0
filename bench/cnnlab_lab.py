"""One tutorial lab in cnnlab, on the split compare.py wrote: prints one JSON line, as keras_lab.py does."""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the cnnlab beside bench/, installed or not
from cnnlab import ImageSet, create_model, evaluate, fit, get_recipe, resolve_device, with_overrides  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="the .npz that compare.py wrote")
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--engine", default="fast")
    parser.add_argument("--autocast", default="off", help="off, or bf16 (mixed precision, as TF32 is on a GPU)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data = np.load(args.data)
    classes = tuple(str(c) for c in range(int(data["classes"])))
    train, val, test = (ImageSet(torch.from_numpy(data[f"{part}_images"]), torch.from_numpy(data[f"{part}_labels"]),
                                 classes) for part in ("train", "val", "test"))
    recipe = with_overrides(get_recipe(args.recipe), {"epochs": args.epochs, "engine": args.engine,
                                                      "autocast": args.autocast, "device": args.device}).resolved()
    device = resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model, tuple(train.images.shape[1:]), len(classes))
    history = fit(model, train, val, recipe, device, verbose=False)
    test_metrics = evaluate(model, test, recipe, device)
    print(json.dumps({
        "epoch_seconds": [row.seconds for row in history], "val_accuracy": history[-1].val_accuracy,
        "test_accuracy": test_metrics["accuracy"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": f"cnnlab on torch {torch.__version__}, {torch.get_num_threads()} threads",
    }))


if __name__ == "__main__":
    main()
