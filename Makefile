# Two commands for a fresh machine:  make demo  (the sync on the local stack)  and  make test.
# Each installs what it needs (Python venv from requirements-dev.txt, Azurite from package-lock.json),
# starts Azurite and the tenant emulator on free loopback ports, and stops them when done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo emulator bench check-infra clean
IAC_VENV := .venv-iac
setup: $(VENV)/.installed node_modules/.installed $(IAC_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(IAC_VENV)/.installed: requirements-iac.txt
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed node_modules/.installed
	$(PY) -m devtenant.stack --demo -- $(PY) -m sync demo

bench: $(VENV)/.installed node_modules/.installed
	$(PY) -m bench --scale full

check-infra: $(IAC_VENV)/.installed
	$(IAC_VENV)/bin/python tools/check_infra.py infra

emulator: $(VENV)/.installed node_modules/.installed
	$(PY) -m devtenant.stack --demo --print-env

clean:
	rm -rf $(VENV) $(IAC_VENV) node_modules .pytest_cache .hypothesis
