#!/usr/bin/env bash
# Every GPU check in one command: Keras 3 on JAX against cnnlab's engines (one table), the CUDA tests, the
# strong recipes over seeds, and airbench side by side with cifar10-fast.
#
#   PYTHON=.venv/bin/python bash bench/gpu.sh prepare   # here (cnnlab's Python, with internet): wheels and data into bench/.carry (git-ignored)
#   bash bench/gpu.sh [EPOCHS]    # on the GPU machine (carry bench/.carry there); EPOCHS defaults to the labs' 10, SEEDS=5
#
# The GPU machine is expected to have python3 with PyTorch, JAX (CUDA), pytest, rich, safetensors and
# matplotlib but no Keras and no internet: the wheels carried in bench/.carry/wheels supply Keras, the two
# packages it needs that JAX does not, and airbench (an sdist on PyPI, built into a wheel here).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=bench/.carry
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = prepare ]; then
  mkdir -p "$CARRY/wheels"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY/wheels" "keras==3.15.*" namex optree
  "$PYTHON" -m pip wheel -q --no-deps -w "$CARRY/wheels" "airbench==0.1.8"
  # The data sets as cnnlab finds them here (Fashion-MNIST downloaded or from Debian's package; the MNIST sample).
  fashion=$(PYTHONPATH=. "$PYTHON" -c 'from cnnlab.data import find_dataset_dir; print(find_dataset_dir("fashion-mnist"))')
  mkdir -p "$CARRY/fashion-mnist" "$CARRY/mnist-sample"
  cp "$fashion"/*-ubyte.gz "$CARRY/fashion-mnist/"
  cp ../shared/datasets/mnist-sample/*-ubyte.gz "$CARRY/mnist-sample/" 2>/dev/null || echo "no MNIST sample beside the repo"
  du -sh "$CARRY"
  exit 0
fi

EPOCHS=${1:-10}
SEEDS=${SEEDS:-5}
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/keras-site "$CARRY"/wheels/*.whl
export PYTHONPATH=/tmp/keras-site:. PYTHONUNBUFFERED=1
step() { echo; echo "== $*"; "$@" || echo "!! failed with exit code $?: $*"; }  # one failure stops no other check
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
recipes=fashion-cnn,cifar10-cnn
[ -d "$CARRY/mnist-sample" ] && recipes=mnist-mlp,mnist-cnn,$recipes
step "$PYTHON" bench/compare.py --device cuda --epochs "$EPOCHS" --recipes "$recipes" --keras jax \
  --engines plain,fast,graph --keras-python "$PYTHON" --mnist-dir "$CARRY/mnist-sample" \
  --fashion-dir "$CARRY/fashion-mnist" --cli
step "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests
step "$PYTHON" bench/recipes.py fashion-fast fashion-best --seeds "$SEEDS" --data-dir "$CARRY/fashion-mnist"
[ -d "$CARRY/mnist-sample" ] && step "$PYTHON" bench/recipes.py mnist-fast --seeds "$SEEDS" --data-dir "$CARRY/mnist-sample"
step "$PYTHON" bench/recipes.py --airbench --seeds "$SEEDS"
