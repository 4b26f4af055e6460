#!/usr/bin/env bash
# Builds FerretDB v1.24.2 (a MongoDB-wire server) from the Go module proxy into
# $TOOLS_DIR/ferretdb, unless it is already there. The GridFS tests run against it.
# FerretDB cannot be built with a plain `go install` (see docs/DEVELOPMENT.md):
# its module must be copied to a writable folder and given a version file first.
set -euo pipefail
VERSION=v1.24.2
TOOLS_DIR=${TOOLS_DIR:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/tools"}
BIN="$TOOLS_DIR/ferretdb"
if [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null | grep -c "$VERSION")" -gt 0 ]; then
  exit 0
fi
mkdir -p "$TOOLS_DIR"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
go mod init ferretdb-build >/dev/null 2>&1
dir=$(go mod download -json "github.com/FerretDB/FerretDB@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ]; then
  echo "ferretdb-build: could not download github.com/FerretDB/FerretDB@$VERSION" >&2
  exit 1
fi
cp -r "$dir" src
chmod -R u+w src
echo "$VERSION" > src/build/version/version.txt
cd src
echo "ferretdb-build: building FerretDB $VERSION (a few minutes the first time)" >&2
go build -o "$BIN" ./cmd/ferretdb
