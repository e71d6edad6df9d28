# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run serve test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py recover_runs
	@echo ""
	@echo "  Screenplay studio on http://$(HOST):$(PORT)/  (model: $${STORY_MODEL:-offline model unless ANTHROPIC_API_KEY is set})"
	@echo "  Writer login: writer / writer-demo-2026    Editor (admin, personas): editor / editor-demo-2026"
	@echo "  Admin: admin / admin-demo-2026 at http://$(HOST):$(PORT)/admin/"
	@echo ""
	$(BIN)/daphne -b $(HOST) -p $(PORT) storyproject.asgi:application

# Production: settings checked, static files collected, migrations applied, interrupted runs recovered,
# then SERVE_PROCESSES daphne processes (default: one per core) on one port (docs/operations.md).
serve: $(STAMP)
	$(BIN)/python -m storyproject.serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

test: $(STAMP) lint typecheck
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) staticfiles db.sqlite3
