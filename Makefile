# keybridge — `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
LOCAL     ?= $(CURDIR)/.local
ENV_FILE  := $(LOCAL)/env
BIN       := bin/keybridge
CONFIG    ?= config/keybridge.example.yaml
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
FUZZTIME  ?= 10s
RELIABILITY_FUZZTIME ?= 60s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1

# Loads the environment deploy/local/up wrote (URLs, credentials).
WITH_ENV := set -a; source $(ENV_FILE); set +a;

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## build bin/keybridge (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/keybridge

.PHONY: up
up: ## start PostgreSQL and Keycloak with the demo realm (idempotent)
	deploy/local/up

.PHONY: down
down: ## stop PostgreSQL and Keycloak
	deploy/local/down

.PHONY: migrate
migrate: build ## apply the migrations to the local database
	$(WITH_ENV) $(BIN) migrate up

.PHONY: run
run: up build ## install what is missing, start the services, migrate and serve the demo realm
	$(WITH_ENV) $(BIN) migrate up
	$(WITH_ENV) exec $(BIN) serve -c $(CONFIG)

.PHONY: test
test: up build tools ## every test: unit, integration against the real services, bounded fuzzing, rule and manifest checks
	deploy/local/reset-realm
	$(WITH_ENV) $(BIN) migrate up
	$(WITH_ENV) CI=$${CI:-true} $(GO) test -v -count=1 -p 2 -timeout 20m ./... > $(LOCAL)/test.log 2>&1 && rc=0 || rc=$$?; \
	  grep -E '^(ok|FAIL|panic:|\s*--- (FAIL|SKIP))' $(LOCAL)/test.log || true; \
	  if [ $$rc -ne 0 ]; then grep -B2 -A30 -E '^\s*--- FAIL|^panic:' $(LOCAL)/test.log | head -n 200; echo "go test failed (full log: $(LOCAL)/test.log)"; exit 1; fi
	$(MAKE) --no-print-directory fuzz-short
	@scripts/test-summary $(LOCAL)/test.log

.PHONY: tools
tools: ## install the test tools (promtool, nginx, jq, wrk) when missing
	scripts/ensure-tools

.PHONY: fuzz-short
fuzz-short: ## run every fuzz target for FUZZTIME (default 10s) each
	scripts/fuzz-all $(FUZZTIME)

.PHONY: bench
bench: up build tools ## benchmarks with their references (make bench BENCH=Decide for one)
	deploy/local/reset-realm
	$(WITH_ENV) $(BIN) migrate up
	$(WITH_ENV) $(GO) test -run='^$$' -bench='$(or $(BENCH),.)' -benchmem -count=1 -timeout 60m ./...

.PHONY: bench-scale
bench-scale: up ## full sync of a generated realm of SIZE users (default 100000, built once) beside a plain read: time, requests, peak RSS
	$(WITH_ENV) KEYBRIDGE_BENCH_SIZE=$(or $(SIZE),100000) $(GO) test -run='^$$' -bench='^BenchmarkFullSyncScale$$' -benchtime=1x -count=1 -timeout 180m ./sync/

.PHONY: reliability
reliability: up build ## hostile tokens, forged webhooks, long fuzzing, injected faults, tenant isolation: prints a summary
	deploy/local/reset-realm
	$(WITH_ENV) $(BIN) migrate up
	$(WITH_ENV) CI=$${CI:-true} KEYBRIDGE_RELIABILITY=1 $(GO) test -count=1 -p 1 -timeout 60m -run 'Reliability|Attack|Abuse|Fault|Isolation|Secret' -v ./... 2>&1 > $(LOCAL)/reliability.log 2>&1 && rc=0 || rc=$$?; \
	  grep -E '^(--- |FAIL|ok|RELIABILITY)' $(LOCAL)/reliability.log || true; [ $$rc -eq 0 ] || echo "reliability tests failed (log: $(LOCAL)/reliability.log)"
	scripts/fuzz-all $(RELIABILITY_FUZZTIME) | tee -a $(LOCAL)/reliability.log
	@scripts/reliability-summary $(LOCAL)/reliability.log

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

.PHONY: clean
clean: ## remove build output
	rm -rf bin
