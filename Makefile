# `make test` and `make demo` work on a fresh clone: they create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo clean benchmark

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of torch first, so the package's torch>=2.4 is already satisfied.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/superpose demo --out superpose-demo

benchmark: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/real_text.py --corpus ../shared/corpus

clean:
	rm -rf $(VENV) superpose-demo
