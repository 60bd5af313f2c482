# The two commands of the README. Both create .venv when missing and install the project.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# On CPU-only machines this exact pin takes the local CPU wheel instead of several GB of CUDA packages.
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast install lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	@echo "installing echo-swarm (llama-cpp-python compiles from source the first time: ~6 min on 2 cores)"
	$(BIN)/python -m pip install -q -e ".[dev,plots]"
	@bash .ci/system-deps
	@if [ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ]; then $(BIN)/python -m pip install -q -e ".[netem]"; fi
	$(BIN)/python -m nodes.engines.llamacpp_tools fetch
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swarm simulate

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

# The inner loop: everything but the tests marked slow (real node processes, long runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check swarm nodes crypto scenarios tests benchmarks

bench: $(STAMP)
	@for b in benchmarks/*_bench.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build *.egg-info
