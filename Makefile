# Clipper build, test and demo targets. `make demo` and `make test` work on a
# fresh Debian 12 machine: they install what is missing first.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/clipper-cloud/clipper/internal/version.Version=$(VERSION)
GUEST := build/guest/vmlinux build/guest/initrd.img
# Whole test run: e2e tests boot real VMs under TCG, so allow time.
TEST_TIMEOUT ?= 30m

.PHONY: all deps build guest-image demo test test-unit bench check fmt vet staticcheck clean

all: build

deps:
	@./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/clipper ./cmd/clipper

guest-image: deps
	@./scripts/build-guest.sh build/guest

demo: deps build guest-image
	@./scripts/demo.sh

# Every test: unit, in-process, fuzz seed corpora, and end-to-end with real
# QEMU VMs, nftables and namespaces (those need root; CI runs as root).
# CLIPPER_TEST_STRICT: everything is installed and built by now, so a test
# that would skip for a missing part (root, QEMU, the guest) fails instead.
test: deps build guest-image
	CLIPPER_TEST_STRICT=1 CLIPPER_BIN=$(CURDIR)/bin/clipper CLIPPER_GUEST=$(CURDIR)/build/guest \
	  $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# The inner loop: no VMs, no namespaces.
test-unit:
	$(GO) test -short -count=1 ./...

bench: deps build guest-image
	@CLIPPER_BIN=$(CURDIR)/bin/clipper CLIPPER_GUEST=$(CURDIR)/build/guest ./scripts/bench.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

check: vet staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(MAKE) test

clean:
	rm -rf bin build
