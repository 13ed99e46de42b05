# Two commands on a fresh machine: `make demo` (install + CPU-sized benchmark + report) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and only when missing, pinned (TORCH=...) so pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/ssmbench run tasks/quick.toml
	$(BIN)/ssmbench report

test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check ssmbench tests tools

# Mutation testing of the critical modules, each against its own tests (docs/testing.md); MUTATE=name... for some.
mutate: install
	$(BIN)/python tools/mutate.py $(MUTATE)

clean:
	rm -rf $(VENV) build *.egg-info
