#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine:
#   - FerretDB v1.24.2, a MongoDB-wire server, for the GridFS tests
#     (built from the Go module proxy into $TOOLS_DIR; Debian has no MongoDB).
set -euo pipefail
cd "$(dirname "$0")/.."
export TOOLS_DIR=${TOOLS_DIR:-"$PWD/.cache/tools"}
command -v go >/dev/null || { echo "test-deps: Go is not installed" >&2; exit 1; }
scripts/ferretdb-build.sh
