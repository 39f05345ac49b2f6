# NetStudio developer commands. `make run` launches the app, `make test` runs the linters and every test,
# `make test-fast` the tests without the slow end-to-end ones, `make lint` ruff, mypy and the import-layer test.
# Both create the virtualenv (.venv) and install NetStudio into it on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARCH   := $(shell uname -m)

# torch/torchvision pins known to work together; aarch64 wheels stop at 2.9.
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: run test test-fast lint bench install clean screenshots

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[test,onnx,sweep,tensorboard]"
	touch $@

install: $(VENV)/.installed

# qt_deps stops with the one apt-get line when Qt's X11 plugin lacks system libraries (fresh Debian/Ubuntu)
run: $(VENV)/.installed
	$(PY) -m netstudio.ui.qt_deps
	$(VENV)/bin/netstudio

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider

# the quick inner loop: everything except the end-to-end tests that start subprocesses
test-fast: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m "not slow"

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

# the README's pictures, from the real window under a virtual display (needs xvfb-run)
screenshots: $(VENV)/.installed
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/editor.py resources/screenshots/editor.png
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/training.py resources/screenshots/training.png
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/health.py resources/screenshots/health.png
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/importing.py resources/screenshots/import.png
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/importing.py resources/screenshots/import_block.png --block layer1_0
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/gan.py resources/screenshots/gan.png
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/gan.py resources/screenshots/gan_losses.png --tab plots
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) .ci/screenshots/sweep.py resources/screenshots/sweep.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
