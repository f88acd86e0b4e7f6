# Everything installs into a local virtual environment ($(VENV)); the exact torch / torchvision pair comes from
# constraints/cpu.txt, everything else from the ranges in setup.cfg.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS ?= constraints/cpu.txt
PYTEST_ARGS ?=
# The suite runs on every core (pytest-xdist); conftest.py keeps a module's shared fixtures on one worker and hands
# out the slow tests first. `make test PYTEST_XDIST=` runs it in one process.
PYTEST_XDIST ?= -n auto --dist loadscope --no-loadscope-reorder
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-dev demo demo-questions test test-fast lint clean gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23" "setuptools>=64" wheel

# The package with its training stack (the `train` extra: the demo trains and evaluates); `pip install -e .` alone
# is an inference install.
$(VENV)/.installed-runtime: $(BIN)/python setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) torch torchvision
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[train]"
	touch $@

# Plus the test / benchmark tools of the `dev` extra.
$(VENV)/.installed-dev: $(VENV)/.installed-runtime
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[train,dev]"
	touch $@

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

# The CPU demo: runtime install (timed here, 0 s when already installed), then examples/demo.py (train_ek100.py with
# examples/recipes/demo.yaml) builds the synthetic data under $(DEMO_DIR)/data, trains and evaluates the tiny preset,
# runs the controls and prints the metric table and the time breakdown. DEMO_ARGS passes more options to the script.
DEMO_DIR ?= outputs/demo
DEMO_ARGS ?=
# The install is timed from inside the recipe, through SUBMAKE: a recipe line that names $(MAKE) itself runs even
# under `make -n`, and here that line also trains.
SUBMAKE = $(MAKE) --no-print-directory
demo:
	@start=$$(date +%s); $(SUBMAKE) install; end=$$(date +%s); \
	$(BIN)/python examples/demo.py --install_seconds $$((end - start)) \
		--output_dir $(DEMO_DIR) --data_cache_dir $(DEMO_DIR)/data $(DEMO_ARGS)

# The question cascade on the CPU: runtime install (timed, as for `make demo`), then examples/cascade_ek100.py --demo
# (3 first-stage folds and the second stage on the default synthetic data, two runs at a time on one thread each)
# prints the first-stage, second-stage and shuffled-question rows. DEMO_QUESTIONS_ARGS passes more options.
DEMO_QUESTIONS_DIR ?= outputs/demo-questions
DEMO_QUESTIONS_ARGS ?=
demo-questions:
	@start=$$(date +%s); $(SUBMAKE) install; end=$$(date +%s); \
	echo "install: $$((end - start)) s"; start=$$(date +%s); \
	$(BIN)/python examples/cascade_ek100.py --demo --output_dir $(DEMO_QUESTIONS_DIR) \
		--data_cache_dir $(DEMO_QUESTIONS_DIR)/data $(DEMO_QUESTIONS_ARGS) && \
	echo "cascade: $$(( $$(date +%s) - start )) s (install not included)"

# The 30 slowest tests are listed at the end: the suite's time is a budget (10 minutes on a 2-core machine, 3 for
# test-fast) that every change keeps.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_XDIST) --durations=30 $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_XDIST) --durations=30 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Wheels carried to a GPU machine without network access by benchmarks/gpu_check.sh: this package (no dependencies:
# the machine's own torch / transformers serve) and pytest with its pure-Python dependencies. Not committed.
GPU_WHEELS ?= benchmarks/wheels
gpu-wheels: $(BIN)/python
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PIP) wheel --quiet --no-deps -w $(GPU_WHEELS) . pytest pluggy iniconfig packaging pygments
	@du -sh $(GPU_WHEELS)
