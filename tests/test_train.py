"""What training costs the process beyond its arithmetic."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

# An optimiser's first call imports torch._dynamo, which imports Triton wherever it is installed.
SCRIPT = """
import sys
from cnnlab.models import create_model
from cnnlab.recipes import get_recipe
from cnnlab.train import make_optimizer
optimizer = make_optimizer(get_recipe("mnist-mlp"), create_model("mlp", (1, 28, 28), 10))
optimizer.zero_grad()
print("torch._dynamo" in sys.modules, sys.modules.get("triton") is not None)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed: nothing to keep out")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU can run Triton's kernels")
def test_training_without_a_gpu_leaves_triton_out():
    """libtriton.so holds 100 MB of resident memory, and no CPU runs its kernels."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]  # torch._dynamo came in, Triton did not
