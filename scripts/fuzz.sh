#!/usr/bin/env bash
# Runs every fuzz target for ${FUZZTIME:-10s} each, one target per `go test`
# invocation, stopping at the first failure (whose crasher go test saves
# under the package's testdata/fuzz/<target>/, where plain `go test` then
# runs it as a regression case). Prints one line per target.
# Interesting inputs are minimized for at most ${FUZZMINIMIZETIME:-5s} each,
# so that short runs spend their time fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}

# package and target; add new fuzz targets here.
targets=(
	"./catalog FuzzApply"
	"./catalog FuzzUnmarshalFilters"
	"./catalog FuzzSnapshotRestore"
	"./catalog FuzzValidateManifest"
	"./replica FuzzFromWire"
	"./server FuzzRouteMetadata"
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1; then
		echo "fuzz: $name ($pkg) FAILED after at most $FUZZTIME:"
		cat "$log"
		exit 1
	fi
	# A run too short to get past the baseline (the corpus) reports no execs.
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
	echo "fuzz: $name ($pkg) ok: $FUZZTIME, ${execs:-0} execs"
done
