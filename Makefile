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

# Two lanes at once: the tests that run a stack (tests/e2e, tests/drills: mostly waiting on Temporal, HTTP and
# timers) beside the rest (mostly CPU), so the two cores both work; the stack lane's output streams, the other's is
# printed when both are done. Exit 5 is pytest's "nothing collected" (a -k that selects one lane only).
STACK_TESTS := tests/e2e tests/drills
test: install
	@$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS) tests $(addprefix --ignore=,$(STACK_TESTS)) \
		> .pytest-other-lane.log 2>&1 & other=$$!; \
	$(BIN)/pytest $(PYTEST_ARGS) $(STACK_TESTS); stacks=$$?; \
	wait $$other; others=$$?; \
	echo "=== the other lane (tests outside $(STACK_TESTS)) ==="; cat .pytest-other-lane.log; \
	for code in $$stacks $$others; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit $$code; done; \
	[ $$stacks -eq 0 ] || [ $$others -eq 0 ]

clean:
	rm -rf $(VENV) .payloop .pytest_cache .pytest-other-lane.log
