# convlens — every target creates or refreshes .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench lint setup clean

$(STAMP): pyproject.toml constraints.txt scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,dicom]'
	bash scripts/install-system-packages.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/convlens demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/train_speed.py --fashion
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/inspect_speed.py
	$(BIN)/python bench/attack_speed.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/train_stream_overhead.py
	$(BIN)/python bench/playground_speed.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/gpu_speed.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
