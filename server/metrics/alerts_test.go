package metrics_test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ddstore/ddstore/internal/testenv"
)

// TestAlertRules: the alert rules in docs/alerts.yml pass `promtool check
// rules`, and their unit tests (docs/alerts_test.yml, with the quorum-lost
// alert firing and resolving) pass `promtool test rules`.
func TestAlertRules(t *testing.T) {
	promtool, err := testenv.Tool("promtool")
	if err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join("..", "..", "docs")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = docs
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
		t.Logf("promtool %v:\n%s", args, out)
	}
}
