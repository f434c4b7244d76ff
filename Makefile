# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch 2.14.1 + torchvision 0.29.1 are a pair that imports together (torch-fidelity needs both).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint format bench-speed bench-quality clean

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(TORCH)
	$(PYTHON) -m pip install --quiet -e '.[dev,classical,app,browser-test]'
	@touch $(STAMP)

## Inpaint the shipped sample with the shipped model: images, step grids, metrics.
demo: $(STAMP)
	$(PYTHON) evaluate.py $(ARGS)

## Lint, format check and the test suite (what CI runs).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -n auto --dist worksteal $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-speed: $(STAMP)
	$(PYTHON) benchmarks/speed.py $(ARGS)

bench-quality: $(STAMP)
	$(PYTHON) benchmarks/quality.py $(ARGS)

clean:
	rm -rf logs .cache .pytest_cache .ruff_cache
