# ddstore — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
TOOLS_DIR ?= $(CURDIR)/.cache/tools
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build demo test test-deps proto bench vet fmt clean fuzz race nemesis

all: build

build:
	$(GO) build -buildvcs=auto -o bin/ddstore ./cmd/ddstore

# Starts a local 3-node cluster on the embedded store, streams a generated file
# up and down (interrupting and resuming the download), verifies it, and
# prints throughput. SIZE=4GiB for a bigger run.
demo: build
	./bin/ddstore demo $(if $(SIZE),--size $(SIZE),)

# Installs what the tests need (FerretDB for GridFS, memcached), then runs
# every test. CI runs exactly this.
test: test-deps
	TOOLS_DIR=$(TOOLS_DIR) scripts/test.sh

test-deps:
	TOOLS_DIR=$(TOOLS_DIR) scripts/test-deps.sh

# Runs every fuzz target for FUZZTIME each (default 60s; `make test` runs
# them briefly). Crashers land in the package's testdata/fuzz/.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),60s) scripts/fuzz.sh

# The packages with concurrency under the race detector (about 9 minutes
# here); `make test` runs it too, after the plain run.
race: test-deps
	TOOLS_DIR=$(TOOLS_DIR) go test -race -count=1 -timeout 20m ./server/... ./replica/ ./client/ ./consensus/

# The nemesis harness (internal/nemesis): kills, stops and partitions nodes
# of a 3-node cluster under concurrent clients, then checks linearizability
# and every acknowledged file. NEMESIS_DURATION per cluster (default 20m;
# two clusters: loopback, then namespaces), NEMESIS_SEED, NEMESIS_MODE,
# NEMESIS_OUT as in internal/nemesis/nemesis_test.go.
nemesis: test-deps build
	NEMESIS_EXE=$(CURDIR)/bin/ddstore NEMESIS_DURATION=$(or $(NEMESIS_DURATION),20m) \
		$(GO) test -count=1 -v -timeout 0 -run 'TestNemesis$$' ./internal/nemesis/

bench: build
	./bin/ddstore bench $(BENCH_FLAGS)

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Regenerates the committed protobuf code with pinned generator versions.
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
	GOBIN=$(TOOLS_DIR) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS_DIR) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS_DIR):$$PATH protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/ddstore/v1/ddstore.proto

clean:
	rm -rf bin
