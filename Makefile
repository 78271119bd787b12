# ProgLog: the one entry point. `make` (or `make help`) lists the targets.
#
# Build outputs live outside the clone so that repeated runs (and CI) reuse them:
#   cargo target dir:   $(CARGO_TARGET_DIR)
#   Kubernetes binaries and devcluster state: $(PROGLOG_CACHE)

SHELL := /bin/bash
PROGLOG_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/proglog
CARGO_TARGET_DIR ?= $(PROGLOG_CACHE)/target
export PROGLOG_CACHE CARGO_TARGET_DIR
CARGO ?= cargo

.DEFAULT_GOAL := help
.PHONY: help run run-local build test e2e bench bench-compare bench-profile bench-tls bench-tls-profile chaos failover-bench crds images deploy undeploy fmt lint k8s-bins dev-cluster-up dev-cluster-down dev-cluster-status dev-cluster-env clean

help: ## List the targets
	@echo "ProgLog make targets:"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

run: ## ProgLog on Kubernetes: devcluster (or KUBECONFIG), images, operator, the sample ProgLog, a few records
	@bash scripts/run.sh

run-local: ## Start a local 3-member cluster on 127.0.0.1:8400-8402, no Kubernetes (Ctrl-C stops it)
	@bash scripts/run-local.sh

build: ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

test: ## Run all tests (unit, storage, cluster, devcluster); builds what they need
	$(CARGO) test --workspace --no-fail-fast

e2e: ## Run the e2e tests against KUBECONFIG (default: start or reuse the devcluster)
	$(CARGO) test -p e2e --no-fail-fast

bench: ## Run the criterion storage benchmarks (prints figures and the raw-disk reference)
	$(CARGO) bench -p logserver --bench storage

bench-compare: ## Durable produce of ProgLog vs etcd 3.6 side by side (3 members each, loopback); prints one table
	@bash bench/compare/run.sh

bench-profile: ## What bounds ProgLog's durable produce: CPU, context switches, fsyncs and RPCs per record on the leader
	@bash bench/compare/profile.sh

bench-tls: ## Durable produce with mutual TLS + ACL vs plaintext (3 members each, loopback, 8 and 32 clients)
	@bash bench/tls/run.sh

bench-tls-profile: ## Where TLS + ACL's cost goes at 32 clients: CPU and context switches per record of members and client
	@bash bench/tls/profile.sh

SEED ?= 1
FAULTS ?= 30
CHAOS_FLAGS ?=
chaos: ## Seeded fault campaign + history check: make chaos SEED=n FAULTS=m [CHAOS_FLAGS=--at-least-once] (netns partitions as root)
	$(CARGO) build -p logserver --bin logserver -p proglog-testkit --bin proglog-chaos
	$(CARGO_TARGET_DIR)/debug/proglog-chaos --seed $(SEED) --faults $(FAULTS) $(CHAOS_FLAGS)

KILLS ?= 50
failover-bench: ## Leader SIGKILL -> first acknowledged produce, KILLS times (release build)
	$(CARGO) build --release -p logserver --bin logserver -p proglog-testkit --bin proglog-failover
	$(CARGO_TARGET_DIR)/release/proglog-failover --kills $(KILLS)

crds: ## Regenerate the ProgLog CRD YAML from the Rust types
	$(CARGO) run -q -p proglog-crds --bin crdgen

images: ## Build the logserver and operator OCI images (no Docker) and load them on the devcluster node
	@bash scripts/images.sh

deploy: ## Install the CRD and the operator into KUBECONFIG's cluster (default: the running devcluster)
	@bash scripts/deploy.sh

undeploy: ## Delete every ProgLog, then the operator and the CRD
	@bash scripts/deploy.sh --delete

fmt: ## Format all Rust code
	$(CARGO) fmt --all

lint: ## Check formatting and run clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

k8s-bins: ## Build the control plane, kubelet, kube-proxy, containerd, CNI plugins, CoreDNS from Go modules (cached)
	@bash tests/devcluster/k8s-bins.sh

dev-cluster-up: ## Start the local Kubernetes cluster: control plane and a stock node (idempotent; root)
	@bash tests/devcluster/up.sh

dev-cluster-down: ## Stop the devcluster and restore the host (processes, network, mounts, sysctls)
	@bash tests/devcluster/down.sh

dev-cluster-status: ## Show what the devcluster runs and whether it is healthy
	@bash tests/devcluster/status.sh

dev-cluster-env: ## Print `export KUBECONFIG=...` for the devcluster (use: eval "$(make -s dev-cluster-env)")
	@bash tests/devcluster/env.sh

clean: ## Remove build outputs (keeps the Kubernetes binaries)
	$(CARGO) clean
