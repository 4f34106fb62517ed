# warm: containerd-shim-warm-v2
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# The shim itself and warm-runc: helpers, run by the front in bin/ and by the shim.
LIBEXEC := $(CURDIR)/libexec/warm
PREFIX ?= /usr/local
# setup.sh installs the pinned tools (cached) and prints the directory they are in.
WITH_TOOLS = tools=$$(./scripts/setup.sh) && export PATH=$(BIN):$$tools:$$PATH &&
UNIT_PKGS = $(shell $(GO) list ./... | grep -v /test)

.PHONY: all build setup test unit integration critest vet install bench demo clean

all: build

build:
	@# Static, without cgo (as containerd builds its runc shim): containerd runs the
	@# runtime's start and delete actions for every container, and a dynamically linked
	@# binary spends ~1 ms more (loader, libc start-up) each time. bin/containerd-shim-warm-v2
	@# is a small front that answers the start action of a container joining a running
	@# shim and the delete action after a clean deletion, and hands the rest to the shim
	@# in libexec (whose package start-up costs ~3 ms more). The front is C where a C
	@# compiler is (a static C binary starts in ~0.3 ms of CPU, a Go one in 1.6 or more),
	@# else the same program in Go (cmd/containerd-shim-warm-v2, which the C one is tested
	@# against).
	mkdir -p $(BIN) $(LIBEXEC)
	@# Where the compiler cannot link statically (no static libc), the Go builds serve.
	if command -v $(CC) >/dev/null 2>&1 && \
		$(CC) -O2 -Wall -Wextra -static -s -o $(BIN)/containerd-shim-warm-v2 cmd/containerd-shim-warm-v2/c/front.c; then :; \
	else \
		CGO_ENABLED=0 $(GO) build -o $(BIN)/containerd-shim-warm-v2 ./cmd/containerd-shim-warm-v2; \
	fi
	CGO_ENABLED=0 $(GO) build -o $(LIBEXEC)/containerd-shim-warm-v2 ./cmd/warm-shim
	CGO_ENABLED=0 $(GO) build -o $(BIN)/warmctl ./cmd/warmctl
	@# warm-runc runs twice on every pool hit: the C build starts ~1.5 ms faster than Go's.
	if command -v $(CC) >/dev/null 2>&1 && \
		$(CC) -O2 -Wall -Wextra -static -s -o $(LIBEXEC)/warm-runc cmd/warm-runc/c/warm-runc.c; then :; \
	else \
		CGO_ENABLED=0 $(GO) build -ldflags='-s -w' -o $(LIBEXEC)/warm-runc ./cmd/warm-runc; \
	fi

setup:
	./scripts/setup.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# Integration tests need root; they start their own containerd under /tmp/warm-it-*.
# Then, on a hybrid cgroup host, the oci tests and the integration suite again on its
# cgroup2 hierarchy, but for the tests that need controllers it lacks
# (scripts/hybrid-v2-check.sh: the cgroup v2 paths of restore, freeze, adopt and kill).
integration: build
	$(WITH_TOOLS) WARM_INTEGRATION=1 $(GO) test -count=1 -v -timeout 60m ./cmd/containerd-shim-warm-v2/ ./internal/... ./oci/... ./test/...
	$(WITH_TOOLS) GO=$(GO) ./scripts/hybrid-v2-check.sh

# CRI conformance: critest v1.37.0 against handlers runc and warm (about 5 minutes).
critest: build
	WARM_SETUP_CRITEST=1 ./scripts/setup.sh >/dev/null
	scripts/cri/run-critest.sh $(CURDIR)/out/critest

test: vet unit integration critest

install: build
	install -D -m 0755 $(BIN)/containerd-shim-warm-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-warm-v2
	install -D -m 0755 $(BIN)/warmctl $(DESTDIR)$(PREFIX)/bin/warmctl
	install -D -m 0755 $(LIBEXEC)/containerd-shim-warm-v2 $(DESTDIR)$(PREFIX)/libexec/warm/containerd-shim-warm-v2
	install -D -m 0755 $(LIBEXEC)/warm-runc $(DESTDIR)$(PREFIX)/libexec/warm/warm-runc
	@if [ ! -e $(DESTDIR)/etc/containerd/warm.toml ]; then \
		install -D -m 0600 warm.toml $(DESTDIR)/etc/containerd/warm.toml; \
	else echo "keeping existing /etc/containerd/warm.toml"; fi

bench: build
	$(WITH_TOOLS) $(GO) run ./test/cmd/bench -out $(CURDIR)/out/bench.json
	WARM_SETUP_CRITEST=1 ./scripts/setup.sh >/dev/null
	CRITEST_BENCH=20 CRITEST_SMOKE_ONLY=1 scripts/cri/run-critest.sh $(CURDIR)/out/critest-bench

demo: build
	$(WITH_TOOLS) $(GO) run ./test/cmd/demo

clean:
	rm -rf $(BIN) $(CURDIR)/libexec out
