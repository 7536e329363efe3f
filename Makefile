# The two set-up commands of the README: `make release` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: release test tools lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# Release the repository's own content; a throwaway key under .keys/ signs it
# unless PIPELINE_SIGNING_KEY names a real one.
release: $(BIN)/.installed
	$(BIN)/inv release --demo-key

# The Debian packages of 7-Zip, minisign, Chromium and the database clients.
tools:
	bash .ci/install-tools

test: $(BIN)/.installed tools
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check pipeline tasks.py tests
	$(BIN)/ruff format --check pipeline tasks.py tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) dist .samples .pipeline-cache
