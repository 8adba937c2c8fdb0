# cnnlab: `make run` trains the Fashion-MNIST lab on real data, `make test` runs the tests,
# `make lab` opens the course's labs as notebooks in JupyterLab.
# Both set up .venv first. TORCH pins the build that lies on this project's machines' disk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.14.1 torchvision==0.29.1
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup run test quick check lab data clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,studio,dev]'
	touch $@

# Fashion-MNIST from Debian's package when it is missing and apt is at hand; otherwise cnnlab
# finds it in its cache or downloads it from Zalando's mirror.
data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null \
	   && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist || \
	  { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; } || \
	  echo "apt could not install dataset-fashion-mnist; cnnlab will look in its cache or download"; \
	fi

run: setup data
	$(BIN)/cnnlab train fashion-cnn

test: setup
	$(BIN)/python -m pytest -q

# The quick loop: everything but the slow tests (a Jupyter kernel, a browser, child processes, real data), a
# pytest-xdist worker a core: about 700 tests in a minute and a half on 2 cores.
quick: setup
	$(BIN)/python -m pytest -q -m "not slow" -n auto

# The lint and type gate (CI runs it before the tests): ruff and mypy as pyproject.toml configures them.
check: setup
	$(BIN)/ruff check cnnlab bench tests
	$(BIN)/mypy

# JupyterLab on .venv's Python (its python3 kernel); cnnlab[lab] installed on first use. It works in $(LAB_DIR)/
# (git-ignored), never on the tracked notebooks: each lab is copied there once, so a learner's edits and outputs
# are kept and everything a lab writes (runs, images) stays there; docs/course.md goes beside for the labs' link.
# As root (a container, this project's machines) Jupyter wants --allow-root.
LAB_DIR := lab-work
lab: setup
	$(BIN)/python -c "import jupyterlab, ipywidgets" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[lab]'
	mkdir -p $(LAB_DIR)/labs $(LAB_DIR)/docs
	for notebook in labs/*.ipynb; do [ -e $(LAB_DIR)/$$notebook ] || cp $$notebook $(LAB_DIR)/$$notebook; done
	cp docs/course.md $(LAB_DIR)/docs/course.md
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) --ServerApp.default_url=/lab/tree/labs \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
