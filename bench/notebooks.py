"""How long each labs/ notebook takes top to bottom at the course's 10 epochs (or --epochs), in a fresh kernel
on this Python, as `make lab` would run it; prints one line per notebook with the load average around it.

    PYTHONPATH=$PWD .venv/bin/python bench/notebooks.py --data mnist=../shared/datasets/mnist-sample \\
        --data fashion=/usr/share/datasets/fashion-mnist --data cifar=/tmp/cifar

--data NAME=FOLDER sets DATA_DIR for the notebooks of that data set (mnist: labs 1–3, fashion: 4, cifar: 5); a
notebook whose data set is not given runs with DATA_DIR = None (cnnlab's own lookup, then a download).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

LABS = Path(__file__).resolve().parents[1] / "labs"
DATA_OF = {"01-images": "mnist", "02-mnist-mlp": "mnist", "03-mnist-cnn": "mnist", "04-fashion-cnn": "fashion",
           "05-cifar10": "cifar"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER")
    parser.add_argument("notebooks", nargs="*",
                        help="stems, in the order to run them, e.g. 04-fashion-cnn (default: all)")
    args = parser.parse_args()
    data = dict(item.split("=", 1) for item in args.data)
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder, "kernels", "bench")
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python"}))
        os.environ["JUPYTER_PATH"] = folder
        print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}, EPOCHS = {args.epochs}")
        for path in [LABS / f"{stem}.ipynb" for stem in args.notebooks] or sorted(LABS.glob("*.ipynb")):
            notebook = nbformat.read(path, as_version=4)
            at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
            data_dir = data.get(DATA_OF[path.stem])
            notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(f"EPOCHS = {args.epochs}\nDATA_DIR = {data_dir!r}"))
            work = Path(folder, path.stem)
            work.mkdir()
            load_before = Path("/proc/loadavg").read_text().split()[:3]
            started = time.perf_counter()
            nbclient.NotebookClient(notebook, kernel_name="bench", timeout=3600,
                                    resources={"metadata": {"path": str(work)}}).execute()
            seconds = time.perf_counter() - started
            load_after = Path("/proc/loadavg").read_text().split()[:3]
            print(f"{path.name}: {seconds:.0f} s (DATA_DIR {data_dir}; load {' '.join(load_before)} before, "
                  f"{' '.join(load_after)} after)", flush=True)


if __name__ == "__main__":
    main()
