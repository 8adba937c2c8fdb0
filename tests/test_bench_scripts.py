"""bench/gpu.sh runs where nothing can be fixed in time (a lent GPU, minutes a session): its Python is checked here.

`prepare` once looked for Fashion-MNIST through a function since renamed, which only the next GPU session's
preparation would have found out.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from helpers import REPO, make_idx_dataset

GPU_SH = REPO / "bench" / "gpu.sh"


def python_snippets() -> list[str]:
    """Each Python program in bench/gpu.sh: `"$PYTHON" -c '…'`, and the suite part's `extras='…'`."""
    return re.findall(r"""(?:"\$PYTHON" -c |extras=)'([^']*)'""", GPU_SH.read_text())


def test_prepare_finds_the_data_set_where_cnnlab_would(tmp_path):
    (finder,) = [code for code in python_snippets() if "fashion-mnist" in code]
    data = make_idx_dataset(tmp_path / "data" / "fashion-mnist")  # the four files under Fashion-MNIST's names
    done = subprocess.run([sys.executable, "-c", finder], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "CNNLAB_DATA": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(data)


def test_every_python_program_in_gpu_sh_compiles():
    snippets = python_snippets()
    assert len(snippets) >= 3  # the data finder, the versions line and the suite part's list of missing extras
    for code in snippets:
        compile(code, "gpu.sh", "exec")


def test_gpu_sh_is_valid_bash():
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-n", str(GPU_SH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
