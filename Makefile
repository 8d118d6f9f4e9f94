# Two commands take a fresh Debian machine from nothing to a running demo and a passing suite.
#   make demo   installs what it needs, starts a throwaway registry, breaks an image, catches it
#   make test   installs what it needs, runs ruff, mypy and the whole pytest suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := docker-registry skopeo prometheus python3-venv

.PHONY: demo test lint deps system-deps venv clean

system-deps:
	@missing=""; \
	command -v docker-registry >/dev/null || command -v registry >/dev/null || [ -n "$$REGISTRY_BIN" ] || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	python3 -m venv --help >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(PY):
	python3 -m venv $(VENV)

venv: $(PY)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'

deps: system-deps venv

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy verifier

test: lint
	$(VENV)/bin/python -m pytest -q

demo: deps
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
