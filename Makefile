# kvloom — run `make help` for the targets.
SHELL := /usr/bin/env bash
GO ?= go
export CGO_ENABLED := 1
# go-nvml's header marks old NVML calls deprecated; cgo would print ~30 warnings per cold build.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the binaries into bin/
	$(GO) build -o bin/ ./cmd/...

.PHONY: demo
demo: ## run the demo on embedded defaults (no configuration)
	$(GO) run ./cmd/kvloom demo

.PHONY: test-deps
test-deps: ## install missing Debian packages the tests need (as root)
	@./scripts/install-test-deps.sh

.PHONY: test
test: test-deps ## install what the tests need, then go test -race ./...
	$(GO) test -race -timeout 15m ./...

.PHONY: test-hw
test-hw: ## tests that need a real GPU or FPGA (build tag hw)
	$(GO) test -tags hw -count=1 ./gpu/... ./nic/...

.PHONY: bench
bench: ## run the benchmarks and print the ratio figures
	@./scripts/bench.sh

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 10s) each
	@./scripts/fuzz.sh $${FUZZTIME:-10s}

.PHONY: generate
generate: ## rebuild generated code (bpf2go, protobuf, register map)
	$(GO) generate ./...

.PHONY: check-generated
check-generated: generate ## fail if generated code differs from what is committed
	@git diff --exit-code --stat -- . || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
