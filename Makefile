# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv if it is missing and install the project into it.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo

.PHONY: demo test bench docs clean

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[test,postgres,dask]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musered demo $(DEMO_DIR)

test: $(STAMP)
	$(PYTHON) -m pytest -q

docs: $(STAMP)
	$(PYTHON) -m recipes.docs > docs/recipes.md

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
