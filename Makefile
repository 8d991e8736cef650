# gridops: `make demo` serves the Foshan demo on http://127.0.0.1:5000; `make test` runs the suite.
# Both install what is missing (distribution packages, the virtualenv, front-end libraries).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
HOST ?= 127.0.0.1
PORT ?= 5000

# Run apt-get as root directly, otherwise through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test setup system-db system-browser lint format clean distclean

DEMO_DATA := var/demo

demo: system-db $(STAMPS)/venv static/vendor/.installed $(DEMO_DATA)/planted.json
	$(BIN)/gridops db start
	$(BIN)/gridops db upgrade
	$(BIN)/gridops demo load $(DEMO_DATA)
	$(BIN)/gridops demo users
	$(BIN)/gridops demo roster
	$(BIN)/gridops demo history
	$(BIN)/gridops demo patrols
	$(BIN)/gridops scheduler --once inspection_tasks
	@echo "gridops demo: http://$(HOST):$(PORT)/"
# The scheduler runs beside the server and is stopped (SIGTERM) whenever serve ends.
	$(BIN)/gridops scheduler & scheduler=$$!; \
	trap 'kill -TERM $$scheduler 2>/dev/null || true; wait $$scheduler || true' EXIT; \
	$(BIN)/gridops serve --host $(HOST) --port $(PORT)

test: system-db system-browser $(STAMPS)/venv static/vendor/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

setup: system-db system-browser $(STAMPS)/venv static/vendor/.installed

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# PostgreSQL + PostGIS from the distribution, whatever PostgreSQL major it ships.
system-db:
	@need=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="postgresql"; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || need="$$need python3-venv"; \
	command -v npm >/dev/null || need="$$need npm"; \
	command -v runuser >/dev/null || need="$$need util-linux"; \
	if [ -n "$$need" ]; then \
	  echo "Installing:$$need"; $(APT) update -qq; $(APT) install -y -qq $$need; \
	fi; \
	pgver=$$(ls /usr/lib/postgresql | sort -n | tail -1); \
	if [ ! -f /usr/share/postgresql/$$pgver/extension/postgis.control ]; then \
	  echo "Installing: postgresql-$$pgver-postgis-3"; \
	  $(APT) update -qq; $(APT) install -y -qq postgresql-$$pgver-postgis-3; \
	fi

# Chromium and a CJK font (without one, Chinese renders as empty boxes) for the browser tests.
system-browser:
	@need=""; \
	[ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ] || need="chromium"; \
	ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1 || need="$$need fonts-noto-cjk"; \
	if [ -n "$$need" ]; then \
	  echo "Installing:$$need"; $(APT) update -qq; $(APT) install -y -qq $$need; \
	fi

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# Front-end libraries from the npm registry, copied into static/vendor/ (never a CDN).
static/vendor/.installed: package.json package-lock.json scripts/vendor-frontend.sh
	npm ci --no-audit --no-fund --loglevel=error
	scripts/vendor-frontend.sh
	@touch $@

# The Foshan demo files (deterministic; rebuilt only when the script or its sources change).
$(DEMO_DATA)/planted.json: geodata/build.py gridops/incidents/catalogue_gbt30428.csv $(STAMPS)/venv static/vendor/.installed
	$(BIN)/python geodata/build.py --out $(DEMO_DATA)

clean:
	rm -rf $(STAMPS) static/vendor node_modules .pytest_cache .ruff_cache

# Also removes the demo database under var/ (stops it first).
distclean: clean
	-[ -x $(BIN)/gridops ] && $(BIN)/gridops db stop
	rm -rf $(VENV) var
