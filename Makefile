# Quick start: `make serve` (install, prepare, serve the quick-start config) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?= 2
CONFIG ?= fixtures/quickstart.yaml
export DEBUG ?= true

.PHONY: serve test install install-dev lint typecheck bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt

serve: install
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py ensure_admin --url http://$(HOST):$(PORT)/admin/
	$(BIN)/python manage.py start_server --config-path $(CONFIG) --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: install
	$(BIN)/python bench/run.py

bench-smoke: install
	$(BIN)/python bench/run.py --smoke

clean:
	rm -rf $(VENV) var
