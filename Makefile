# detinfer: `make test` is the README's test command and what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
GENERATED := crds docs/api-reference.md

.PHONY: help install test unit lint format crds verify golden run clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## make .venv with the operator and the test tools (torch is not needed)

test: $(STAMP) verify unit ## everything CI runs: generated files, lint, unit tests

unit: $(STAMP) ## unit tests
	$(BIN)/python -m pytest tests/unit -q

lint: $(STAMP) ## ruff: lint and formatting
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests

format: $(STAMP) ## reformat the code
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests

crds: $(STAMP) ## regenerate the CRD and docs/api-reference.md from the API models
	$(BIN)/detinfer crds

verify: crds lint ## regenerate generated files and fail on any diff
	@if ! git diff --quiet -- $(GENERATED) || [ -n "$$(git ls-files --others --exclude-standard -- $(GENERATED))" ]; then \
		git --no-pager diff --stat -- $(GENERATED); \
		echo "generated files are stale: commit the output of 'make crds'"; exit 1; fi

golden: $(STAMP) ## rewrite the builders' golden files after an intended change
	UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/unit/test_builders.py -q

run: $(STAMP) ## run the operator against the current kubeconfig context (CRD must be installed)
	$(BIN)/detinfer run

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
