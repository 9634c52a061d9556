# identity-agent. `make run` is the quick start; `make test` is what CI runs.
GO        ?= go
BIN       := bin/identity-agent
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOLANGCI  ?= $(shell command -v golangci-lint 2>/dev/null || echo $(HOME)/go/bin/golangci-lint)

.PHONY: build deps deps-systemd test test-mingo test-spire test-systemd run bench lint clean try try-redis try-uvicorn try-traefik try-ollama fuzz reload-race

build:
	$(GO) build $(BUILDFLAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/identity-agent

# The whole suite with the race detector: unit, integration (real redis-server,
# uvicorn, openssl, curl) and the CLI tests against the built binary.
deps:
	./scripts/deps.sh

# What make test-systemd needs on the host (root): systemd-nspawn, debootstrap.
deps-systemd:
	./scripts/deps.sh systemd

test: deps
	$(GO) test -race -count=1 -timeout 15m ./...

# The library on the lowest Go go.mod declares (GOTOOLCHAIN, from the module
# proxy): build, vet and short tests of ./pkg/..., then an outside module
# (test/importer) requiring this checkout builds and passes its test without
# go mod tidy raising its go line. About 3 minutes on 2 cores.
test-mingo:
	./scripts/test-mingo.sh

# Issue 18's full figure: an in-place writer racing 100 SIGHUP/s for 60 s
# (`make test` runs the same test for 10 s). RELOAD_RACE=5m for longer.
RELOAD_RACE ?= 60s
reload-race:
	$(GO) test -race -count=1 -timeout 30m -run '^TestReloadAppliesOnlyCompleteFiles$$' -v ./cmd/identity-agent/ -args -reload-race=$(RELOAD_RACE)

# The conformance suite (test/spire, build tag `conformance`: `make test`
# neither builds nor runs it): the same scenarios against the dev Workload API
# (TestDev) and a real SPIRE server and agent (TestSPIRE; v1.13.3, pinned in
# test/spire/tools), started on loopback in a temporary directory.
# scripts/spire-build.sh builds SPIRE into a cache directory the first time
# (about 12 minutes of compile on 2 cores) and reuses it after.
test-spire: deps
	dir=$$(./scripts/spire-build.sh) && \
	IDENTITY_AGENT_SPIRE_BIN="$$dir" IDENTITY_AGENT_REQUIRE_SPIRE=1 \
	$(GO) test -tags conformance -race -count=1 -timeout 20m -run '^(TestDev|TestSPIRE)$$' -v ./test/spire/

# The service path on a real systemd: Debian's 252, 254 (bookworm-backports)
# and 257 (trixie), each booted as PID 1 of a systemd-nspawn container with the
# agent installed by `identity-agent install` (internal/systemdtest; needs
# root). The first run builds the three root file systems from the Debian
# mirror (scripts/systemd-rootfs.sh, cached); see docs/SERVICE.md.
# Narrow with IDENTITY_AGENT_SYSTEMD_FLAVOURS=bookworm,trixie.
test-systemd: deps-systemd
	$(GO) test -tags systemd -count=1 -parallel 3 -timeout 40m $(TESTFLAGS) ./internal/systemdtest/

# The first build on a fresh machine downloads the modules and compiles them
# (minutes): say so, and let Go name what it downloads and builds.
run:
	@echo "make run: building $(BIN); the first build downloads Go modules (go: downloading ...) and compiles every package (listed as it builds), which can take a few minutes"
	@$(MAKE) --no-print-directory build BUILDFLAGS=-v
	./scripts/quickstart.sh

# Each example on this machine, unprivileged, against the dev Workload API,
# with the example's own files (examples/*/try.sh; `make test` runs them too).
# `make try` runs all four even when one fails (a missing program is named
# with its package; `make deps` installs them all) and lists what failed.
try: build
	@failed=""; for e in redis uvicorn traefik ollama-macos; do \
	  ./examples/$$e/try.sh || failed="$$failed examples/$$e/try.sh"; done; \
	if [ -n "$$failed" ]; then echo "make try: failed:$$failed" >&2; exit 1; fi
try-redis: build
	./examples/redis/try.sh
try-uvicorn: build
	./examples/uvicorn/try.sh
try-traefik: build
	./examples/traefik/try.sh
try-ollama: build
	./examples/ollama-macos/try.sh

# A short fuzz run of the config decoder, the SPIFFE ID allow-list parser
# and the X-Forwarded-Client-Cert parser (CI runs it; longer: make fuzz
# FUZZTIME=10m). The seed corpus is in the tests and testdata/fuzz; plain
# `go test` replays it.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAllow$$' -fuzztime $(FUZZTIME) ./pkg/mtls/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/xfcc/

# Benchmarks; results go to docs/BENCHMARKS.md (see scripts/bench.sh).
bench: build
	./scripts/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) vet -tags conformance,systemd ./test/... ./internal/systemdtest/
	@# The model host is macOS on ARM64: keep that build (tests included) compiling.
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	$(GOLANGCI) run ./...

clean:
	rm -rf bin
