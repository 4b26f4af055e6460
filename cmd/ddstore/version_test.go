package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVersion: `ddstore version`, `--version` and `version --json` name the
// build; a stray argument is a usage error.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := run(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ddstore ") || !strings.Contains(r.stdout, "go1.") || strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("ddstore %v: exit %d, %q, %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := run(t, "version", "--json")
	var b buildInfo
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || r.code != 0 || b.Version == "" || b.Go == "" {
		t.Fatalf("version --json: exit %d, %q: %+v, %v", r.code, r.stdout, b, err)
	}
	wantFail(t, run(t, "version", "extra"), 2, "version")
}
