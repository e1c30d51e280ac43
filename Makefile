# VramCram — make help lists the targets.
export GOTOOLCHAIN := go1.27.3
# go-nvml's header marks some functions deprecated; those warnings are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DIST     ?= dist
DEMO_PORT ?= 8000
DEMO_DIR ?= bin/demo
CONFIG   ?= config.example.yaml
FUZZTIME ?= 30s
BENCHCOUNT ?= 1
SEEDS    ?= 2000

.PHONY: help build testengine run test test-short bench fuzz lint deps tidy cover clean gpu-bin gpu-check sim stress loadtest metrics-check systemd-check smoke vulncheck release demo

help: ## list targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z][a-z-]*:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/vramcram (cgo on)
	CGO_ENABLED=1 $(GO) build -ldflags '$(LDFLAGS)' -o bin/vramcram .

testengine: ## build the stand-in engine bin/testengine
	$(GO) build -o bin/testengine ./runner/testengine

run: build ## run with $(CONFIG)
	./bin/vramcram -config $(CONFIG)

test: ## all tests with -race (end-to-end included)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

.PHONY: test-dashboard
test-dashboard: ## only the dashboard's headless-Chromium test, verbose (prints the screenshot's path)
	$(GO) test -race -count=1 -v -run '^TestE2E_Dashboard' ./e2e

test-short: ## unit tests only
	$(GO) test -race -count=1 -short -timeout 5m ./...

bench: ## benchmarks: durable enqueue (bbolt, and Redis at 64 clients), claim→complete and Redis claim latency, scheduler decisions, HTTP submit throughput, proxy overhead, a 10,000-line batch
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./store/ ./scheduler/
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./api/
	$(GO) test -run '^$$' -bench Submit -benchtime 3s -count $(BENCHCOUNT) ./e2e
	$(GO) test -run '^$$' -bench ProxyOverhead -benchtime 5000x -count $(BENCHCOUNT) ./e2e
	$(GO) test -run '^$$' -bench Batch10k -benchtime 1x -count $(BENCHCOUNT) ./e2e
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./store/redisstore/

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

lint: ## gofmt, go vet, dependency rule
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	@$(MAKE) -s deps

deps: ## leaves (store, runner, vram, engine, api/logring) import nothing of ours; scheduler knows engines only through engine/; config, cli and api/wire stay apart from the API server and the engines
	@for p in store runner vram engine api/logring; do \
	  if $(GO) list -f '{{join .Imports "\n"}}' ./$$p | grep -q 'vramcram/vramcram/'; then echo "$$p imports project packages"; exit 1; fi; done
	@bad=$$($(GO) list -deps ./scheduler | grep -E '^(os/exec|image/png)$$|vramcram/vramcram/(engine/.+|runner|api)$$'); \
	  if [ -n "$$bad" ]; then echo "scheduler depends on:" $$bad; exit 1; fi
	@for p in $$($(GO) list ./engine/... | grep -v '/enginetest$$'); do \
	  bad=$$($(GO) list -f '{{join .Imports "\n"}}' $$p | grep 'vramcram/vramcram/' | grep -vE 'vramcram/vramcram/(engine(/[a-z]+)?|runner)$$'); \
	  if [ -n "$$bad" ]; then echo "$$p imports" $$bad; exit 1; fi; done
	@for p in config cli api/wire; do \
	  bad=$$($(GO) list -f '{{join .Imports "\n"}}' ./$$p | grep -E 'vramcram/vramcram/(api|cli|runner|e2e)$$|labstack/echo'); \
	  if [ -n "$$bad" ]; then echo "$$p imports" $$bad; exit 1; fi; done
	@bad=$$($(GO) list -deps ./cli | grep -E '^os/exec$$|labstack/echo|vramcram/vramcram/(api|runner|engine/.+)$$'); \
	  if [ -n "$$bad" ]; then echo "cli depends on:" $$bad; exit 1; fi
	@echo "deps ok"

tidy: ## go mod tidy
	$(GO) mod tidy

vulncheck: ## govulncheck against the pinned golang.org/x/vulndb (cached); fails unless allowed in scripts/vulncheck/allow.txt
	GO=$(GO) scripts/vulncheck/run.sh

cover: ## coverage report
	$(GO) test -count=1 -coverprofile=cover.out ./... && $(GO) tool cover -func=cover.out | tail -1

stress: ## crash test: 1000 jobs while VramCram is SIGKILLed 20 times (STRESS_JOBS, STRESS_KILLS)
	STRESS_JOBS=$${STRESS_JOBS:-1000} STRESS_KILLS=$${STRESS_KILLS:-20} $(GO) test -race -count=1 -timeout 20m -run 'TestE2E_CrashStress$$' -v ./e2e

loadtest: ## load test: 500 clients submit and poll 20,000 jobs (LOAD_CLIENTS, LOAD_JOBS, LOAD_MAX_QUEUE)
	LOAD_CLIENTS=$${LOAD_CLIENTS:-500} LOAD_JOBS=$${LOAD_JOBS:-20000} LOAD_MAX_QUEUE=$${LOAD_MAX_QUEUE:-300} $(GO) test -count=1 -timeout 20m -run 'TestE2E_Load$$' -v ./e2e

sim: ## deterministic scheduler simulation over SEEDS random seeds (default 2000)
	$(GO) test -race -count=1 -run 'TestSim$$' ./scheduler -sim.seeds=$(SEEDS)

gpu-bin: ## prebuild vramcram, the stand-in engine and the NVML tests into .gpu-bin/ for scripts/gpu-check.sh
	CGO_ENABLED=1 $(GO) build -ldflags '$(LDFLAGS)' -o .gpu-bin/vramcram .
	$(GO) build -o .gpu-bin/testengine ./runner/testengine
	CGO_ENABLED=1 $(GO) test -c -tags nvml -o .gpu-bin/vram-nvml.test ./vram/

gpu-check: ## GPU machine only: NVML tests + VRAM checks with GPU-holding stand-in engines
	scripts/gpu-check.sh

clean: ## remove build outputs
	rm -rf bin cover.out .gpu-bin vramcram $(DIST)

release: ## make release VERSION=vX.Y.Z: reproducible linux amd64+arm64 archives and SHA256SUMS in dist/ (DIST; needs gcc-aarch64-linux-gnu)
	GO=$(GO) DIST=$(DIST) VERSION=$(VERSION) scripts/release.sh

demo: build testengine ## try it without a GPU: a daemon on 127.0.0.1:8000 (DEMO_PORT) with stand-in engines (deploy/demo.yaml)
	@mkdir -p $(DEMO_DIR)/engines $(DEMO_DIR)/models
	@for e in llama-server sd-cli sd-server; do ln -sfn $(CURDIR)/bin/testengine $(DEMO_DIR)/engines/$$e; done
	@for m in chat.gguf embed.gguf image.safetensors; do \
	  test -f $(DEMO_DIR)/models/$$m || echo "placeholder: the stand-in engine does not read it" >$(DEMO_DIR)/models/$$m; done
	@echo "VramCram demo on http://127.0.0.1:$(DEMO_PORT)/ (dashboard). Models: demo-chat, demo-embed, demo-image."
	@echo "In another terminal:"
	@echo "  ./bin/vramcram --url http://127.0.0.1:$(DEMO_PORT) submit -m demo-chat --wait 'Explain VRAM in one sentence.'"
	@echo "  ./bin/vramcram --url http://127.0.0.1:$(DEMO_PORT) ps"
	@echo "Stop with Ctrl-C. Jobs are kept in $(DEMO_DIR)/data."
	cd $(DEMO_DIR) && VRAMCRAM_SERVER__PORT=$(DEMO_PORT) exec $(CURDIR)/bin/vramcram -config $(CURDIR)/deploy/demo.yaml

metrics-check: ## workload on a daemon, then promtool check metrics on the scrape (needs promtool)
	@command -v promtool >/dev/null || { echo "promtool missing: apt-get install --no-install-recommends prometheus"; exit 1; }
	$(GO) test -race -count=1 -v -run 'TestE2E_Metrics$$|TestMetrics_Promtool$$' ./e2e ./api/

systemd-check: ## systemd-analyze verify deploy/systemd/vramcram.service (needs systemd)
	@command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing: apt-get install systemd"; exit 1; }
	$(GO) test -count=1 -v -run 'TestSystemdUnit' ./e2e

smoke: build ## scripts/smoke.sh against the server at VRAMCRAM_URL (default http://127.0.0.1:8000)
	VRAMCRAM=./bin/vramcram bash scripts/smoke.sh
