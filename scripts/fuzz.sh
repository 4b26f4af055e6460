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
	"./proto/codec FuzzUnmarshal"
	"./proto/codec FuzzMarshal"
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# crashers lists the inputs saved for a target (go test writes a crasher
# there when it finds one).
crashers() { ls "$1/testdata/fuzz/$2" 2>/dev/null | sort || true; }

for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	for attempt in 1 2; do
		before=$(crashers "$pkg" "$name")
		if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1; then
			break
		fi
		# Go 1.26's fuzzing coordinator can fail a target with a bare
		# "context deadline exceeded" at the end of -fuzztime, having found
		# nothing (golang/go#75804, fixed in Go 1.27): run it once more when
		# that is all it says and no crasher was saved. A real finding
		# fails at once.
		if [ "$attempt" = 1 ] && [ "$(crashers "$pkg" "$name")" = "$before" ] &&
			grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "fuzz: $name ($pkg): the fuzzing coordinator's deadline race (golang/go#75804), no input saved; running it again"
			continue
		fi
		echo "fuzz: $name ($pkg) FAILED after at most $FUZZTIME:"
		cat "$log"
		exit 1
	done
	# A run too short to get past the baseline (the corpus) reports no execs.
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
	echo "fuzz: $name ($pkg) ok: $FUZZTIME, ${execs:-0} execs"
done
