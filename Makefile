# Two commands do all the set-up: `make demo` and `make test`. Each (re)builds .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/aisle demo-data $(DEMO_DIR) --n-train 600 --n-test 200
	$(VENV)/bin/aisle check --config configs/demo.yaml --set data.train_csv=$(DEMO_DIR)/train.csv --out $(DEMO_DIR)/check
	$(VENV)/bin/aisle train --config configs/demo.yaml --set data.train_csv=$(DEMO_DIR)/train.csv --overwrite
	$(VENV)/bin/aisle predict runs/demo-fusion --data $(DEMO_DIR)/test.csv --tta hflip
	$(VENV)/bin/aisle evaluate runs/demo-fusion/predictions/probabilities.csv --labels $(DEMO_DIR)/test_labels.csv
	$(VENV)/bin/aisle report runs/demo-fusion

# the fast suite (slow end-to-end checks are opt-in: make test-slow; CI runs both)
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) runs
