# Two commands take a fresh Debian machine from nothing to a running demo and a passing suite.
#   make demo   installs what the demo needs, starts a throwaway registry, breaks images, catches it
#   make test   installs what the suite needs, runs ruff, mypy and the whole pytest suite
# Missing Debian packages are installed with apt-get (through sudo unless run as root); a
# virtual environment is created in .venv. Nothing needs to be on PATH beforehand but python3.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests find `regverify` and the venv's tools on PATH, as an installed user would.
VENV_PATH := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: demo test lint demo-deps test-deps venv venv-create clean

# apt_missing PACKAGE:PROBE ...: install each PACKAGE whose PROBE (a shell test) fails.
define apt_install
	@missing=""; \
	for pair in $(1); do \
	  pkg=$${pair%%:*}; probe=$${pair#*:}; \
	  eval "$$probe" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

# Each probe looks for what the code runs, not for the package name. `python3 -m venv --help`
# works without python3-venv; creating a venv needs ensurepip, which only that package ships.
REGISTRY_PROBE := docker-registry:'command -v docker-registry || command -v registry || [ -n "$$REGISTRY_BIN" ]'
DEMO_PACKAGES := $(REGISTRY_PROBE) \
	skopeo:'command -v skopeo' \
	python3-venv:'python3 -c "import ensurepip"'
TEST_PACKAGES := $(DEMO_PACKAGES) \
	prometheus:'command -v promtool' \
	systemd:'command -v systemd-analyze' \
	prometheus-alertmanager:'command -v prometheus-alertmanager' \
	prometheus-pushgateway:'command -v prometheus-pushgateway' \
	prometheus-node-exporter:'command -v prometheus-node-exporter'

demo-deps:
	$(call apt_install,$(DEMO_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_PACKAGES))

# A venv whose python or pip does not work (python3-venv was missing when it was made, or an
# interrupted run) is rebuilt rather than reused.
venv-create:
	@if [ -e $(VENV) ] && ! $(PY) -m pip --version >/dev/null 2>&1; then \
	  echo "rebuilding the incomplete $(VENV)"; rm -rf $(VENV); \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)

# The package with its test extra (the development venv).
venv: venv-create
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'

lint: test-deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy verifier

test: lint
	$(VENV_PATH) $(PY) -m pytest -q

# The demo needs the package alone (its push helpers use only httpx).
demo: demo-deps venv-create
	@$(PY) -m pip install -q --disable-pip-version-check -e .
	$(VENV_PATH) $(PY) examples/demo.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
