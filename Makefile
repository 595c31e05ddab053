# sluice: two commands on a fresh machine.
#   make demo   run a provider end to end on the local stack (moto + local Lambda + fake API)
#   make test   create .venv, install the workspace with its dev dependencies, lint, run pytest

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check common scripts providers tests

test: lint
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/sluice local demo

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
