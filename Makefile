# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make run    install, create a demo configuration once, serve it on 127.0.0.1
#   make test   install everything the suite needs (Chromium, Node provider, Redis) and run it
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_DIR ?= demo
PORT ?= 8501
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint install install-test system-deps bench-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[api,mcp]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Debian packages the tests drive for real: Chromium for Playwright (which
# cannot download its own browsers here), Node for the OpenID provider and the
# Observatory scanner, redis-server and nginx for the scale-out tests.
system-deps:
	@pkgs=""; \
	command -v chromium >/dev/null || pkgs="$$pkgs chromium"; \
	command -v node >/dev/null || pkgs="$$pkgs nodejs"; \
	command -v npm >/dev/null || pkgs="$$pkgs npm"; \
	command -v redis-server >/dev/null || test -x /usr/bin/redis-server || pkgs="$$pkgs redis-server"; \
	test -x /usr/sbin/nginx || pkgs="$$pkgs nginx"; \
	if [ -n "$$pkgs" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing Debian packages:$$pkgs"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs >/dev/null; \
	fi
	@if [ -f tests/oidc/package.json ] && [ ! -d tests/oidc/node_modules ]; then \
	  cd tests/oidc && (npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error); \
	fi

bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

$(DEMO_DIR)/gateway.toml: | $(VENV)/.installed
	$(VENV)/bin/gateway init $(DEMO_DIR) --demo --port $(PORT)

run: $(VENV)/.installed $(DEMO_DIR)/gateway.toml
	@echo ""
	@echo "Toolgate demo: http://localhost:$(PORT)/  (sign in with a demo user printed when $(DEMO_DIR)/ was created;"
	@echo "forgot them? rm -rf $(DEMO_DIR) && make run)"
	@echo ""
	$(VENV)/bin/gateway run --config $(DEMO_DIR)/gateway.toml

# Mistakes, not style: the rule set and why each exception is taken are in pyproject.toml.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

test: $(VENV)/.installed-test system-deps lint
	$(VENV)/bin/pytest

bench: $(VENV)/.installed-test bench-deps
	$(PIP) install --quiet -e ".[test,bench]"
	$(PY) benchmarks/chain_overhead.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) tests/artifacts .pytest_cache
