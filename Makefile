# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv in this folder when it is missing and install chemoscreen (editable) into it.
#
# TORCH is the PyTorch requirement pip installs first. The default is the CPU wheel; with a CUDA GPU use
# a CUDA build, e.g.
#   make demo TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# dev: test tools; chgnet: the machine-learned potential (candidates --source chgnet);
# cluster: the PostgreSQL driver for an MLflow server on PostgreSQL.
EXTRAS ?= dev,chgnet,cluster
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell echo '$(TORCH) $(EXTRAS)' | cksum | cut -d' ' -f1)

.PHONY: venv demo test test-slow test-cluster test-browser lint docs bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## make demo: the whole pipeline on embedded defaults (local Ray, SQLite MLflow store in demo-output/)
demo: $(STAMP)
	$(VENV)/bin/chemoscreen demo --out demo-output

## make test: lint, the documentation build (warnings are errors) and the default test suite
test: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest -q

## make test-slow: long checks (CHGNet relaxations, convergence studies, the full demo)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

## make test-cluster: real servers on loopback: PostgreSQL, an MLflow server, a two-node Ray cluster
test-cluster: $(STAMP)
	sh infra/scripts/install-postgres.sh
	$(PY) -m pytest -q -m cluster tests/infra

## make test-browser: the MLflow UI and the sweep report in headless Chromium (Debian's `chromium` package,
## driven by Playwright; nothing is downloaded). Without Chromium the tests fail and say how to install it.
test-browser: $(STAMP)
	$(PY) -m pytest -q -m browser tests/browser

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .

## make docs: the guides and the API reference from the docstrings, in build/site (--strict: a warning fails)
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/mechanics.py --quick

clean:
	rm -rf $(VENV) demo-output .pytest_cache build/site
