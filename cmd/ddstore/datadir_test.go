package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDefaultDataRoot: the default data directory is absolute wherever the
// node starts: /var/lib/ddstore for root, else under $XDG_DATA_HOME or home.
func TestDefaultDataRoot(t *testing.T) {
	t.Chdir(t.TempDir())
	got := defaultDataRoot()
	if !filepath.IsAbs(got) {
		t.Fatalf("default data root %q is relative", got)
	}
	if os.Geteuid() == 0 && got != "/var/lib/ddstore" {
		t.Fatalf("as root: %q, want /var/lib/ddstore", got)
	}
}
