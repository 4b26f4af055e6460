#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine:
#   - FerretDB v1.24.2, a MongoDB-wire server, for the GridFS tests
#     (built from the Go module proxy into $TOOLS_DIR; Debian has no MongoDB);
#   - PostgreSQL, from Debian's packages, for FerretDB's PostgreSQL backend
#     (the tests initdb and start throwaway clusters of their own, as the
#     postgres user the package creates, and stop and remove them; they do
#     not use the package's own cluster);
#   - memcached, from Debian's packages, for the cache tests;
#   - iproute2 (ip), from Debian's packages, for the private-network test
#     (network namespaces and veth pairs; the tests run as root);
#   - the S3 clients the S3 gateway is tested with (awscli, rclone, s3cmd),
#     promtool (prometheus) for the metrics and alert rules, and chromium for
#     the web console's browser test, all from Debian's packages;
#   - grpc-health-probe, built from the Go module proxy into $TOOLS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOOLS_DIR=${TOOLS_DIR:-"$PWD/.cache/tools"}
command -v go >/dev/null || { echo "test-deps: Go is not installed" >&2; exit 1; }

missing=()
command -v memcached >/dev/null || [ -x /usr/bin/memcached ] || missing+=(memcached)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
# Debian's own binaries, by path: a pip or pyenv `aws` earlier on PATH is not
# the client the tests name.
[ -x /usr/bin/aws ] || missing+=(awscli)
[ -x /usr/bin/rclone ] || missing+=(rclone)
[ -x /usr/bin/s3cmd ] || missing+=(s3cmd)
[ -x /usr/bin/promtool ] || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test-deps: ${missing[*]} missing; install as root: apt-get install -y ${missing[*]}" >&2; exit 1; }
    sudo="sudo -n"
  fi
  echo "test-deps: installing ${missing[*]} from Debian's packages" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
fi

scripts/ferretdb-build.sh

GRPC_HEALTH_PROBE_VERSION=v0.4.62
if [ ! -x "$TOOLS_DIR/grpc-health-probe" ]; then
  echo "test-deps: building grpc-health-probe $GRPC_HEALTH_PROBE_VERSION" >&2
  GOBIN="$TOOLS_DIR" GOFLAGS=-mod=mod go install "github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"
fi
