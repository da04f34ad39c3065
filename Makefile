# Two commands do all the set-up from a fresh clone:
#   make demo   - install into .venv, run a small real sweep on the embedded defaults
#   make test   - install into .venv, run the test suite (what CI runs)
# A GPU user picks their torch build:  make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test test-slow lint ui clean tables

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: a bare "torch" requirement with nothing installed pulls a multi-GB CUDA build
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/harness sweep gflownet-quick --tuner optuna --trials 8 --workers 2 --pruner median --defaults-first

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check harness models tests benchmarks

ui: install
	$(BIN)/harness ui

# Tabulated spaces for simulated benchmarks: 500 Sobol configurations + 100 around the best decile, x 3 seeds each, one
# worker; resumable (rerun after a crash). Hours of CPU; --workers N or a GPU shortens it.
TABLE_CONFIGS ?= 500
TABLE_SEEDS   ?= 3
TABLE_DENSE   ?= 100
tables: install
	for s in gflownet-quick diffusion-quick locoprop-quick; do \
	  $(BIN)/harness tabulate $$s --configs $(TABLE_CONFIGS) --seeds $(TABLE_SEEDS) --dense $(TABLE_DENSE) || exit 1; done
	$(BIN)/python benchmarks/tables.py

clean:
	rm -rf $(VENV) .harness mlflow.db mlartifacts
