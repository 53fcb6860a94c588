# Two commands on a fresh machine: `make study` and `make test`. Both are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test test-all bench gmm docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and alone: with it installed, nothing later can pull a CUDA build.
$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

STUDY_SPEC ?= search_spaces/gmm.yaml
STUDY_DIR := studies/$(shell sed -n 's/^name: *\([^ #]*\).*/\1/p' $(STUDY_SPEC))

# A finished or interrupted study is resumed (finished trials are kept), never started twice.
study: $(STAMP)
	@if [ -f $(STUDY_DIR)/spec.yaml ]; then \
		$(BIN)/tgdp-study resume $(STUDY_DIR); \
	else \
		$(BIN)/tgdp-study run $(STUDY_SPEC) --dir studies; \
	fi

gmm: $(STAMP)
	$(BIN)/tgdp-study gmm --n 10 100 1000 --out results/gmm

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# docs/spec_reference.md and docs/cli_reference.md are generated from the code (tests/test_docs.py checks),
# docs/results.md from bench/results/*.json (tests/test_results_doc.py checks).
docs: $(STAMP)
	COLUMNS=100 $(BIN)/python -m study.docgen
	$(BIN)/python -m study.results_doc

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) studies results
