# Two commands for a newcomer: `make demo` (main job) and `make test` (the whole test suite).
# Both create the virtual environment in .venv the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# A CPU wheel of torch lies on these machines' disk; on a GPU machine install a CUDA torch first.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,serve,llm,finetune]'
	touch $@

demo: env
	$(BIN)/kinema generate "a red ball bounces on green grass"

test: env
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
