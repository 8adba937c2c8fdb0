"""CPU time and page faults of a Fashion-MNIST step on one thread: a measure that a busy machine barely moves.

    python bench/step_cost.py plain && python bench/step_cost.py fast      # one process per engine
"""
from __future__ import annotations

import resource
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnnlab import create_model, fit, get_recipe, load_dataset, split  # noqa: E402

STEPS, EPOCHS = 100, 3  # steps an epoch (12,800 training images), epochs


def main() -> None:
    engine = sys.argv[1] if len(sys.argv) > 1 else "fast"
    torch.set_num_threads(1)  # CPU time on one thread is work done, not waiting for a core
    train_all, _ = load_dataset("fashion-mnist")
    train, val = split(train_all, 0.2, 9)
    train, val = train.subset(torch.arange(STEPS * 128)), val.subset(torch.arange(2560))
    recipe = replace(get_recipe("fashion-cnn"), epochs=EPOCHS, engine=engine).resolved()
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model, (1, 28, 28), 10)
    before = resource.getrusage(resource.RUSAGE_SELF)
    history = fit(model, train, val, recipe, verbose=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = STEPS * EPOCHS
    print(f"{engine}: epochs {[round(row.seconds, 2) for row in history]} s; CPU a step, validation included: "
          f"user {(after.ru_utime - before.ru_utime) / steps * 1e3:.1f} ms + system "
          f"{(after.ru_stime - before.ru_stime) / steps * 1e3:.1f} ms; "
          f"{(after.ru_minflt - before.ru_minflt) / steps:.0f} page faults a step")


if __name__ == "__main__":
    main()
