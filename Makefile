# Builds llama_exporter with the same version stamping as promu (.promu.yml).
GO        ?= go
BINARY    := llama_exporter
PKG       := github.com/prometheus/common/version
VERSION   := $(shell cat VERSION)
REVISION  := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    := $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILDUSER := $(shell whoami)@$(shell hostname)
BUILDDATE := $(shell date -u +%Y%m%d-%H:%M:%S)
LDFLAGS   := -X $(PKG).Version=$(VERSION) -X $(PKG).Revision=$(REVISION) \
             -X $(PKG).Branch=$(BRANCH) -X $(PKG).BuildUser=$(BUILDUSER) \
             -X $(PKG).BuildDate=$(BUILDDATE)
DOCKER_IMAGE ?= llama-exporter/llama_exporter
DOCKER_ARCH  ?= amd64

.PHONY: all build test fabric lint docker clean

all: lint build test

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BINARY) .

# The README's test command. Needs root (network namespaces) and Debian's
# prometheus package for the full suite; CI=true turns skips into failures.
test:
	$(GO) test -count=1 -p 1 -timeout 40m ./...

# The fleet test alone: a simulated leaf-spine fabric in network namespaces,
# one exporter per host, a real Prometheus and Alertmanager with the shipped
# rules, five faults (about 13 minutes; root, prometheus, promtool,
# prometheus-alertmanager, amtool, iptables). LLAMA_FABRIC_HOSTS=24 measures
# the larger fleet; LLAMA_FABRIC_FAULTS=a,c picks faults.
fabric:
	$(GO) test -count=1 -p 1 -timeout 40m -run '^TestFabric$$' -v ./e2e

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	staticcheck ./...

# The Dockerfile copies .build/$(OS)-$(ARCH)/llama_exporter, as promu lays it out.
docker: build
	mkdir -p .build/linux-$(DOCKER_ARCH)
	cp $(BINARY) .build/linux-$(DOCKER_ARCH)/$(BINARY)
	docker build --build-arg ARCH=$(DOCKER_ARCH) --build-arg OS=linux -t $(DOCKER_IMAGE):$(VERSION) .

clean:
	rm -rf $(BINARY) .build
