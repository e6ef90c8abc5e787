# Two entry points for a fresh machine: `make dev` runs the service, `make test` runs every check.
# Both create .venv and build the Rust extension as needed, and are safe to run again.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUST_SOURCES := Cargo.toml rust_core/Cargo.toml $(wildcard rust_core/src/*.rs)

.PHONY: dev test lint rust-test py-test embedded-db promtool chromium image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "maturin>=1.7,<2"

# Editable install: Python sources are used in place; the extension is rebuilt when Rust changes.
$(VENV)/.dev-installed: $(BIN)/python pyproject.toml $(RUST_SOURCES)
	@echo "Installing schedsvc and building its Rust timing core (a few minutes the first time)..."
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $@

$(VENV)/.test-installed: $(VENV)/.dev-installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The embedded MongoDB-compatible server (SecantusDB's Rust server), built once per machine into a per-user
# cache keyed by its pinned version; a no-op when it is there. SCHEDSVC_EMBEDDED_MONGODB=python skips it.
embedded-db: $(VENV)/.dev-installed
	$(BIN)/python -m schedsvc.embedded install

dev: embedded-db
	$(BIN)/schedsvc dev

lint: $(VENV)/.test-installed
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(BIN)/ruff check src tests loadtests
	$(BIN)/mypy

rust-test:
	cargo test --quiet

py-test: $(VENV)/.test-installed embedded-db promtool chromium
	$(BIN)/pytest

# promtool checks and unit-tests the alert rules (tests/unit/test_alert_rules.py). It ships in Debian's
# `prometheus` package, whose install also enables the Prometheus server: stop it, only the tool is wanted.
promtool:
	@command -v promtool >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		&& { systemctl disable --now prometheus.service >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true; }; \
	else \
		echo "promtool is missing: install the Debian package 'prometheus' (apt-get install prometheus)" >&2; exit 1; \
	fi

# The console's browser tests (tests/browser) drive Debian's Chromium through Playwright, which never downloads
# a browser of its own here.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "chromium is missing: install the Debian package 'chromium' (apt-get install chromium)" >&2; exit 1; \
	fi

test: lint rust-test py-test

# The container image (Containerfile), with podman, or docker when podman is absent: `make image IMAGE=...`.
IMAGE ?= schedsvc:dev
image:
	@engine=$$(command -v podman || command -v docker) \
		|| { echo "make image needs podman or docker, and neither is installed (Debian: apt-get install podman)" >&2; exit 1; }; \
	"$$engine" info >/dev/null 2>&1 \
		|| { echo "$$engine is installed but not usable (is its daemon or service running?): '$$engine info' fails" >&2; exit 1; }; \
	echo "$$engine build -f Containerfile -t $(IMAGE) ."; \
	"$$engine" build -f Containerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) target .pytest_cache .mypy_cache .ruff_cache
