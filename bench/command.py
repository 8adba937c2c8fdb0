"""Where the seconds of a whole `cnnlab train` command go, phase by phase (issue #18, goal 3).

    PYTHONPATH=. python bench/command.py fashion-cnn --data-dir DIR [--device cuda] [--repeat 3] [--set F=V …]

Each repeat runs two fresh processes, interleaved: the plain command (`python -m cnnlab train …`, timed
start to exit) and the same command with a timer around each phase. The timers wrap cnnlab's own functions
from outside (nothing in the package knows about them) and count each phase's own time: a per-epoch
checkpoint inside `fit` counts as "checkpoints", not as "training". On CUDA each phase begins and ends with a
synchronisation, so the GPU's queued work lands in the phase that queued it. Two things the run would do
inside another phase are done first and timed apart: starting CUDA, and importing torch._dynamo (torch.optim's
first step imports it). "python" is the process's start and exit: the plain wall time less what the timed
process measured inside itself. Prints a Markdown table of medians and ranges over the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (phase, module, attribute): cnnlab.train's own names, as _train_into calls them, and the Run methods it uses
# ("module:Class").
PHASES = (
    ("read the data", "cnnlab.train", "load_dataset"),
    ("split", "cnnlab.train", "split"),
    ("model", "cnnlab.train", "create_model"),
    ("summary", "cnnlab.train", "summarize"),
    ("optimiser, normalisation", "cnnlab.train", "start_state"),
    ("first files, sample figure", "cnnlab.train", "_begin"),
    ("training (epochs, validation)", "cnnlab.train", "fit"),
    ("checkpoints", "cnnlab.train", "save_checkpoint"),
    ("checkpoints", "cnnlab.runs:Run", "write_history"),
    ("test evaluation", "cnnlab.train", "evaluate"),
    ("weights file", "cnnlab.runs:Run", "save_weights"),
    ("figures", "cnnlab.plots", "plot_curves"),
    ("figures", "cnnlab.plots", "plot_predictions"),
    ("three predictions", "cnnlab.train", "predict"),
    ("metrics.json", "cnnlab.runs:Run", "write_metrics"),
)
ORDER = ("python", "import torch", "import cnnlab", "CUDA start", "import torch._dynamo",
         *dict.fromkeys(phase for phase, _, _ in PHASES), "the rest (printing, checks, parsing)")


def child(out: str, argv: list[str]) -> None:
    """Run `cnnlab train ARGV` in this process with a timer on each phase; write the phases' seconds to OUT."""
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    import torch

    seconds["import torch"] = time.perf_counter() - began
    mark = time.perf_counter()
    import cnnlab.cli
    import cnnlab.train  # noqa: F401  (matplotlib, rich and the rest of the package come with it)

    seconds["import cnnlab"] = time.perf_counter() - mark
    if "cuda" in argv:
        mark = time.perf_counter()
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        seconds["CUDA start"] = time.perf_counter() - mark
    mark = time.perf_counter()
    import torch._dynamo  # noqa: F401

    seconds["import torch._dynamo"] = time.perf_counter() - mark
    nested: list[float] = []  # the time inner phases took, for each phase now running

    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def timed(phase: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            nested.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                sync()
                took = time.perf_counter() - start
                inner = nested.pop()
                seconds[phase] = seconds.get(phase, 0.0) + took - inner
                if nested:
                    nested[-1] += took
        return wrapper

    for phase, module, name in PHASES:
        module_name, _, class_name = module.partition(":")  # "cnnlab.runs:Run": a method of Run
        owner = getattr(sys.modules[module_name], class_name) if class_name else sys.modules[module_name]
        setattr(owner, name, timed(phase, getattr(owner, name)))
    sys.argv = ["cnnlab", "train", *argv]
    try:
        cnnlab.cli.run()  # the command's own way in and out (run ends the process as `cnnlab` does)
    except SystemExit as exit_:
        sync()
        total = time.perf_counter() - began
        seconds["the rest (printing, checks, parsing)"] = total - sum(seconds.values())
        Path(out).write_text(json.dumps({"seconds": seconds, "total": total, "code": exit_.code}))
        raise


def run_once(argv: list[str], env: dict[str, str], timed: bool) -> tuple[float, dict]:
    """Wall seconds of one fresh process (and, if timed, its phases)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "phases.json"
        command = [sys.executable, __file__, "--child", str(out), *argv] if timed else \
            [sys.executable, "-m", "cnnlab", "train", *argv]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-800:]}")
        return wall, json.loads(out.read_text()) if timed else {}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    walls: list[float] = []
    timed_walls: list[float] = []
    phases: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as runs:
        argv = [args.recipe, "--data-dir", args.data_dir, "--device", args.device, "--runs-dir", runs, "--quiet"]
        argv += ["--epochs", str(args.epochs)] if args.epochs else []
        for item in args.set:
            argv += ["--set", item]
        for repeat in range(args.repeat):
            wall, _ = run_once(argv, env, timed=False)
            timed_wall, result = run_once(argv, env, timed=True)
            walls.append(wall)
            timed_walls.append(timed_wall)
            for phase, value in {**result["seconds"], "python": timed_wall - result["total"]}.items():
                phases.setdefault(phase, []).append(value)
            print(f"repeat {repeat + 1}/{args.repeat}: command {wall:.2f} s, with timers {timed_wall:.2f} s",
                  file=sys.stderr, flush=True)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    shown = " ".join([args.recipe, "--data-dir", Path(args.data_dir).name, "--device", args.device, *argv[8:]])
    print(f"`cnnlab train {shown}`, {args.repeat} repeat{'s' * (args.repeat > 1)}, median (min–max) s\n")
    print("| phase | s |\n| --- | ---: |")
    for phase in ORDER:
        if phase in phases:
            print(f"| {phase} | {cell(phases[phase])} |")
    print(f"| **the command with timers, start to exit** | {cell(timed_walls)} |")
    print(f"| **the command, start to exit** | {cell(walls)} |")


if __name__ == "__main__":
    main()
