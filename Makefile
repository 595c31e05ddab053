# sluice: two commands on a fresh machine.
#   make demo   run a provider end to end on the local stack (moto + local Lambda + fake API)
#   make test   create .venv, install the workspace with its dev dependencies, lint, run pytest
#   make lock   pin the Lambda bundle's dependencies (providers/*/requirements.txt) to the venv

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint install lock clean

# The runtime's dependencies install at the locked versions (what the Lambda bundle ships), so
# the tests run on exactly what deploys, today and on any later day.
LOCK := providers/demo/requirements.txt

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[tools,dev]" -c $(LOCK)
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check common scripts providers tests

test: lint
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/sluice local demo

lock: $(STAMP)
	$(PY) -m sluice_tools.deploy.lock

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
