# The two commands: `make run` (train the default ensemble if missing, then serve the
# repository) and `make test` (lint, types, the whole test suite). Both set up .venv first:
# `make run` only what running needs (torch, the trainer's and the server's packages);
# `make test` adds the test tools, Ray and Chromium.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build on machines that carry it; elsewhere pick the build you want.
TORCH ?= torch==2.13.0
# onnxruntime flavour: gpu (onnxruntime-gpu; also runs on CPU-only Linux x86-64) or cpu.
ORT ?= $(shell $(PYTHON) -c "import platform, sys; print('gpu' if sys.platform == 'linux' and platform.machine() == 'x86_64' else 'cpu')")
REPOSITORY ?= models
PORT ?= 8000

.PHONY: setup setup-run setup-test run test lint browser fuzz

# What `make run` needs: torch, then the package with the trainer's extra and onnxruntime.
setup-run: $(VENV)/.installed-run
# Everything: the above plus the test tools (pytest, ruff, mypy, Playwright, ...) and Ray.
setup setup-test: $(VENV)/.installed-test

$(VENV)/.installed-run: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)  # unquoted: it may carry pip options
	$(BIN)/python -m pip install --quiet -e ".[train,serve,$(ORT)]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -e ".[train,serve,dev,ray,$(ORT)]"
	touch $@

run: setup-run
	$(BIN)/python -m trainer --dataset digits --repository $(REPOSITORY) --skip-if-exists
	$(BIN)/python -m server --repository $(REPOSITORY) --port $(PORT)

lint: setup-test
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

# The long schemathesis run (every check, about 13,000 requests) against a real server on
# the digits default; `make test` runs a short one.
fuzz: setup-test
	$(BIN)/python bench/fuzz.py
