#!/usr/bin/env bash
# Runs the whole test suite against real servers. Test packages that need
# MongoDB start FerretDB themselves (internal/testenv) from the binary that
# scripts/test-deps.sh built, unless DDSTORE_TEST_MONGO_URI names one.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOOLS_DIR=${TOOLS_DIR:-"$PWD/.cache/tools"}
echo "test: go vet ./..."
go vet ./...
echo "test: go test ./..."
go test -count=1 -timeout 18m ${GOTEST_FLAGS:-} ./...
# The packages with concurrency again, under the race detector (about 9
# minutes on 2 cores).
echo "test: go test -race ./server/... ./replica/ ./client/ ./consensus/"
go test -race -count=1 -timeout 25m ${GOTEST_FLAGS:-} ./server/... ./replica/ ./client/ ./consensus/
echo "test: fuzz (short)"; FUZZTIME=${FUZZTIME:-8s} scripts/fuzz.sh
