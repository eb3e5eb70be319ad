# The README's two commands: `make run` and `make test`. Both create .venv
# (Python 3.11+) and install the pinned requirements when needed.
PYTHON ?= python3
# `make run PORT=8001` serves the web app on another port.
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-browser lint check-deploy clean bench

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# Local settings: DEBUG on, secrets generated under data/ on first use.
.env:
	cp .env.example .env

# Quiet start-up (migrations print only on failure); run_all creates the admin
# account and prints its password and the sandbox key last, in one block.
run: install .env
	@$(BIN)/python manage.py migrate --noinput -v 0
	@$(BIN)/python manage.py setup_schedules -v 0
	@$(BIN)/python manage.py run_all --addr 127.0.0.1:$(PORT)

test: install .env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-browser: install .env
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

lint: install .env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

# `check --deploy` with production settings (DEBUG off, secrets from the environment).
check-deploy: install
	DEBUG=0 SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	FIELD_ENCRYPTION_KEYS=$$($(BIN)/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())') \
	ALLOWED_HOSTS=collector.example.com \
	$(BIN)/python manage.py check --deploy --fail-level WARNING

bench: install .env
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) staticfiles
