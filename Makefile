# Two commands on a fresh Linux machine:
#   make demo   install into .venv, then open napari with the plugin, sample data and default model
#   make test   install into .venv, then run the whole test suite (GUI tests under Xvfb)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench docs-screenshots

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[test]" -c constraints.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/temdefect gui --sample bubbles --model bubble

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install -q -e ".[bench]" -c constraints.txt
	$(PY) benchmarks/run_all.py
