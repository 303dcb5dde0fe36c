# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# These releases lie on the build machines' disk; newer ones would be a multi-GB download.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,simplify,serve,tune,data]'

# The whole flow on the embedded sample competition with clf's default recipe (no tuning flags):
# data -> train -> runs table -> ONNX + parity -> submission -> score.
demo: install
	$(BIN)/clf sample-data $(DEMO)/data --overwrite
	$(BIN)/clf train $(DEMO)/data/train --arch cnn --out $(DEMO)/runs --name cnn-demo --overwrite --quiet
	$(BIN)/clf runs $(DEMO)/runs
	$(BIN)/clf export $(DEMO)/runs/cnn-demo --onnx
	$(BIN)/clf infer $(DEMO)/data/test --model $(DEMO)/runs/cnn-demo/model.onnx \
		--sample-submission $(DEMO)/data/sample_submission.csv --csv $(DEMO)/submission.csv
	$(BIN)/clf score $(DEMO)/submission.csv $(DEMO)/data/test_labels.csv

# The linter first (its rules are pinned in pyproject.toml): a lint failure is a red run, like a failing test.
test: install-dev
	$(BIN)/ruff check clf tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
