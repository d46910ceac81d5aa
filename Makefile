# The two commands: `make run` (train the default ensemble if missing, then serve the
# repository) and `make test` (lint, types, the whole test suite). Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build on machines that carry it; elsewhere pick the build you want.
TORCH ?= torch==2.13.0
# onnxruntime flavour: gpu (onnxruntime-gpu; also runs on CPU-only Linux x86-64) or cpu.
ORT ?= $(shell $(PYTHON) -c "import platform, sys; print('gpu' if sys.platform == 'linux' and platform.machine() == 'x86_64' else 'cpu')")
REPOSITORY ?= models
PORT ?= 8000

.PHONY: setup run test lint browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[train,dev,ray,$(ORT)]"
	touch $@

run: setup
	$(BIN)/python -m trainer --dataset digits --repository $(REPOSITORY) --skip-if-exists
	$(BIN)/python -m server --repository $(REPOSITORY) --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The demo page test drives the system's Chromium (Debian's package); installed here when
# running as root on Debian, as CI does. Elsewhere, install it first (the test fails without it).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (apt-get install chromium) for the demo page tests"; fi; }

test: lint browser
	$(BIN)/python -m pytest
