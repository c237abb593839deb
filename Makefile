# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Both install into ./.venv first (torch 2.13.0 CPU wheel, then the project).
PY := .venv/bin/python
# one pytest-xdist worker per core, each on one torch thread (tests/conftest.py); `make test XDIST=` runs one process
XDIST ?= -n auto --dist worksteal
PYTEST_ARGS ?= -q -m "not slow"

.PHONY: install install-test demo test test-all

install:
	bash scripts/install.sh --render

install-test:
	bash scripts/install.sh --test --descript

demo: install
	bash scripts/demo.sh

test: install-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-all: install-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(XDIST) -q
