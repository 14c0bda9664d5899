# hubnode: build and test. `make test` is the project's test command (README).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
INTEROP := node/testdata/interop
CLUSTER := node/testdata/cluster

.PHONY: build run test test-go test-interop test-cluster

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/hubnode ./cmd/hubnode

run: build
	./bin/hubnode

# Go unit and integration tests (race detector on, real redis-server
# processes), then the official socket.io-client against the built binary:
# one node, then three nodes with Redis behind real nginx; every fuzz target
# for FUZZTIME; then the chart and compose checks, and a real helm install on
# a loopback Kubernetes API server.
test: test-go test-fuzz test-interop test-cluster test-chart test-chart-install

# -p 1: one package at a time; the timing-sensitive cluster tests of one
# package then do not compete for the two cores with another's -race run.
test-go:
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 ./...

test-interop: build
	[ -d $(INTEROP)/node_modules ] || npm ci --prefix $(INTEROP) --no-audit --no-fund
	cd $(INTEROP) && HUBNODE_BIN=$(CURDIR)/bin/hubnode npm test

test-cluster: build
	[ -d $(CLUSTER)/node_modules ] || npm ci --prefix $(CLUSTER) --no-audit --no-fund
	cd $(CLUSTER) && HUBNODE_BIN=$(CURDIR)/bin/hubnode npm test

# --- Deployment checks (charts/hubnode, docker-compose.yml), offline. ---------
# Tools (helm, kubeconform, helm-unittest; kube-apiserver, kubectl & co. for
# the install test) are built from the Go module proxy when missing, into
# ~/.cache/hubnode/chart-bin; Kubernetes JSON schemas are converted into
# ~/.cache/hubnode/chart-cache. Both live outside the checkout, so every clone
# on a machine reuses them (a new machine builds them once: about 15 minutes).
.PHONY: test-chart test-chart-install chart-tools chart-clean

# helm lint --strict, helm template + kubeconform -strict for each value set in
# charts/hubnode/ci, refusals, helm-unittest, helm package, compose validation.
test-chart:
	.ci/chart/test.sh

# helm install --wait / upgrade / uninstall on a throwaway kwok cluster
# (kube-apiserver, etcd, controller-manager, scheduler on 127.0.0.1). The
# first run builds the Kubernetes binaries (minutes).
test-chart-install:
	.ci/chart/install.sh

chart-tools:
	.ci/chart/tools.sh helm kubeconform helm-unittest

chart-clean:
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/hubnode/chart-bin $${XDG_CACHE_HOME:-$$HOME/.cache}/hubnode/chart-cache

# --- Fuzzing (issue 6) ---------------------------------------------------------
# Every fuzz target of the module (found with `go test -list '^Fuzz'`), one at
# a time, FUZZTIME each (go test -fuzztime: 10s, 1m, 5000x); fails on any
# failing input, which go test writes under the package's testdata/fuzz/.
# About 7 targets x FUZZTIME plus a build per target.
FUZZTIME ?= 10s
.PHONY: test-fuzz
test-fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz.sh
