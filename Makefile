# Two entry points that work from a clean clone: `make demo` and `make test`.
# Each creates a local virtualenv (.venv) and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hwsim run scenarios/gpt3-175b-1024xa100.yaml --out out/gpt3-175b

# report.html is checked in a headless Chromium: installed here when missing (root + apt-get)
test: $(STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python bench/engine_throughput.py

.PHONY: install demo test bench
