# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test demo install clean

$(BIN)/payloop: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'  # the tests include the bench's
	@touch $@

install: $(BIN)/payloop

run: install
	$(BIN)/payloop run

demo: install
	$(BIN)/payloop demo

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .payloop .pytest_cache
