# ModelGuard. `make run` and `make test` do all set-up on a fresh machine; see README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `local` (default): the embedded control plane in .cluster/. `existing`: the cluster $KUBECONFIG
# points at; never chosen silently.
CLUSTER ?= local
# `real` (default): the local cluster has one real node (kubelet, containerd, kube-proxy,
# kube-router, CoreDNS) next to its kwok nodes. `kwok`: every node simulated; never chosen silently.
NODE ?= real
CLUSTER_DIR := .cluster
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## the Python environment in .venv

# Independent judges live in their own environment: checkov pins much of its dependency tree.
JUDGES := .venv-judges
CHECKOV_VERSION := 3.3.30
$(JUDGES)/.installed-$(CHECKOV_VERSION):
	rm -rf $(JUDGES)
	$(PYTHON) -m venv $(JUDGES)
	$(JUDGES)/bin/pip install --quiet --upgrade pip
	$(JUDGES)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

.PHONY: judges
judges: $(JUDGES)/.installed-$(CHECKOV_VERSION) ## checkov in .venv-judges, and trivy (built once, like the tools)
	hack/build-tools.sh trivy

# Debian packages (hack/debian-packages.txt), installed where missing; needs root for apt-get.
.PHONY: packages
packages: ## install the Debian packages the project needs (hack/debian-packages.txt)
	hack/install-packages.sh

# Archives in .build/images/ (git-ignored); the slow layers are cached in ~/.cache/modelguard.
.PHONY: image
image: venv packages ## build the ModelGuard image as an OCI archive (.build/images/); prints its digest
	$(BIN)/python hack/images.py modelguard

.PHONY: images
images: venv packages tools ## the ModelGuard, example model server and pause images (name, digest, archive)
	$(BIN)/python hack/images.py all

.PHONY: tools
tools: ## build the control plane, the real node's binaries, kwok, helm, minio and trivy once into ~/.cache/modelguard
	hack/build-tools.sh

.PHONY: generate
generate: venv tools ## write crds/, the chart's CRD templates and manifests/install.yaml from the code
	$(BIN)/python hack/generate.py

# helm lint gets a digest, which the chart requires: without one it would see only the error.
.PHONY: lint
lint: venv tools ## ruff, mypy (strict), import-linter layer contracts, helm lint
	$(BIN)/ruff check operator tests hack benchmarks fuzz
	$(BIN)/ruff format --check operator tests hack benchmarks fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd benchmarks/loadgen && test -z "$$(gofmt -l .)" && GOFLAGS=-mod=readonly go vet ./...
	cd tests/tlogcheck && test -z "$$(gofmt -l .)" && GOFLAGS=-mod=readonly go vet ./...
	cd tests/gitopshealth && test -z "$$(gofmt -l .)" && GOFLAGS=-mod=readonly go vet ./...
	$$($(BIN)/python hack/localcluster.py which helm) lint --strict charts/modelguard --set image.digest=sha256:$$(printf '0%.0s' $$(seq 64))

.PHONY: test-unit
test-unit: venv tools packages ## unit tests only (no cluster; helm renders the chart)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: lint venv tools packages judges ## every test: lint, unit, and integration against a real control plane
	MODELGUARD_TEST_NODE=$(NODE) $(BIN)/pytest tests $(PYTEST_ARGS)

# Needs Docker, which this project's machines and CI do not have: never run by `make test`.
.PHONY: e2e-kind
e2e-kind: venv ## kind cluster in Docker, image from the Dockerfile (kind load), chart, integration suite; needs Docker, not run here or by CI
	BIN=$(BIN) hack/e2e-kind.sh

.PHONY: cluster-up
cluster-up: venv tools packages ## start the local control plane; admin kubeconfig in .cluster/kubeconfig
	$(BIN)/python hack/localcluster.py up --dir $(CLUSTER_DIR) --node $(NODE)

.PHONY: cluster-down
cluster-down: venv ## stop the local control plane (and make run's model store)
	$(BIN)/python hack/s3server.py down --dir .run/demo/s3
	$(BIN)/python hack/localcluster.py down --dir $(CLUSTER_DIR)

.PHONY: run
run: venv tools packages ## local cluster + CRDs + operator + examples, status shown; Ctrl-C stops the operator
	CLUSTER=$(CLUSTER) CLUSTER_DIR=$(CLUSTER_DIR) NODE=$(NODE) BIN=$(BIN) hack/run.sh

.PHONY: clean
clean: cluster-down ## stop the cluster and remove local state (the binary cache stays)
	rm -rf $(CLUSTER_DIR) .cluster-test .run .s3-test

# atheris (libFuzzer for Python) is only needed here: its own stamp, out of `make test`'s set-up.
$(BIN)/.installed-fuzz: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,fuzz]'
	touch $@

FUZZ_TARGETS := admission bundle statement approval audit
FUZZ_SECONDS ?= 1800
FUZZ_RSS_MB ?= 1024
.PHONY: fuzz
# A target that crashes stops; the others still run, and make fails at the end.
fuzz: $(BIN)/.installed-fuzz ## fuzz each target (fuzz/targets.py) FUZZ_SECONDS (1800) in turn, niced; finds in .fuzz/
	failed=""; for target in $(FUZZ_TARGETS); do \
		nice -n 19 $(BIN)/python fuzz/run.py $$target --seconds $(FUZZ_SECONDS) \
			--rss-mb $(FUZZ_RSS_MB) || failed="$$failed $$target"; \
	done; test -z "$$failed" || { echo "fuzz: crashes in$$failed (.fuzz/<target>/crash-*)"; exit 1; }

.PHONY: fuzz-merge
fuzz-merge: $(BIN)/.installed-fuzz ## add to fuzz/corpus/ the inputs of the last runs that reach new code
	for target in $(FUZZ_TARGETS); do nice -n 19 $(BIN)/python fuzz/run.py $$target --merge; done

# The scale benchmark's N: small by default to keep `make bench` bounded (a few minutes);
# `make bench SCALE_MODELS=1000` (about 15 minutes on 2 cores) is the issue's figure.
SCALE_MODELS ?= 50
.PHONY: bench
# verify_throughput runs twice: start-up is fixed and hashing grows with the model, so a large
# model shows the other end of the figures. api_requests' reference is the operator as of the
# commit before a reconcile read each object once.
bench: venv tools packages ## benchmarks: figures printed next to a reference measured in the same run
	PYTHONPATH=hack $(BIN)/python benchmarks/cluster_start.py
	PYTHONPATH=hack $(BIN)/python benchmarks/verify_throughput.py
	PYTHONPATH=hack $(BIN)/python benchmarks/verify_throughput.py --size-gib 8
	PYTHONPATH=hack $(BIN)/python benchmarks/fetch_throughput.py
	PYTHONPATH=hack $(BIN)/python benchmarks/fetch_verify_throughput.py
	PYTHONPATH=hack $(BIN)/python benchmarks/certificate_verify.py
	$(BIN)/python benchmarks/format_classify.py
	$(BIN)/python benchmarks/audit_log.py
	PYTHONPATH=hack $(BIN)/python benchmarks/audit_proxy.py
	PYTHONPATH=hack $(BIN)/python benchmarks/webhook_latency.py
	PYTHONPATH=hack $(BIN)/python benchmarks/owned_objects_policy.py
	PYTHONPATH=hack $(BIN)/python benchmarks/hostile_bundles.py
	PYTHONPATH=hack $(BIN)/python benchmarks/api_requests.py --baseline 23ee173
	PYTHONPATH=hack $(BIN)/python benchmarks/backup_throughput.py --size-gib 2
	PYTHONPATH=hack $(BIN)/python benchmarks/scale.py --models $(SCALE_MODELS)
