package localcluster

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPortTaken(t *testing.T) {
	dir := t.TempDir()
	if PortTaken(errors.New("cluster not ready"), dir) {
		t.Fatal("no log says so")
	}
	os.WriteFile(filepath.Join(dir, "node2.log"), []byte("listen tcp 127.0.0.1:1: bind: address already in use\n"), 0o644)
	if !PortTaken(errors.New("cluster not ready"), dir) || !PortTaken(errors.New("bind: address already in use"), "") {
		t.Fatal("a taken port not seen")
	}
}
