# Two commands for a fresh machine:  make demo  (the sync on the local stack)  and  make test.
# Each installs what it needs (Python venv from requirements-dev.txt, Azurite from package-lock.json),
# starts Azurite and the tenant emulator on free loopback ports, and stops them when done.
PYTHON ?= python3
# The Functions app runs on Python 3.11 (infra/app.bicep); its pinned packages are built and tested for it.
PYTHON_VERSION := 3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo emulator bench check-infra clean check-python lock
IAC_VENV := .venv-iac
setup: $(VENV)/.installed node_modules/.installed $(IAC_VENV)/.installed

check-python:
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$(PYTHON_VERSION)" else "The app targets Python $(PYTHON_VERSION) (infra/app.bicep) and $(PYTHON) is Python " + v + ": install Python $(PYTHON_VERSION) and run make PYTHON=python$(PYTHON_VERSION) (or put it first on PATH).")'

# Installs exactly the locked set (hashes checked); `make lock` refreshes the locks from the *.in files.
$(VENV)/.installed: requirements.txt requirements-dev.txt | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

$(IAC_VENV)/.installed: requirements-iac.txt | check-python
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements-iac.txt
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

# Resolve requirements*.in into the hashed locks, for every platform, for the app's Python (uv, pinned).
LOCK_VENV := .venv-lock
UV_VERSION := 0.13.8
lock: | check-python
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION))
	for name in requirements requirements-dev requirements-iac; do \
	  $(LOCK_VENV)/bin/uv pip compile $$name.in --generate-hashes --universal --python-version $(PYTHON_VERSION) \
	    --custom-compile-command "make lock" --quiet -o $$name.txt || exit 1; done

clean:
	rm -rf $(VENV) $(IAC_VENV) $(LOCK_VENV) node_modules .pytest_cache .hypothesis
