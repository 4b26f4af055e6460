package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Tool finds a program the tests need: in $TOOLS_DIR, in the module's
// .cache/tools (where scripts/test-deps.sh builds grpc-health-probe), or on
// PATH (promtool comes from Debian's prometheus package). The error says
// how to install it; tests fail with it rather than skip.
func Tool(name string) (string, error) {
	var tried []string
	if d := os.Getenv("TOOLS_DIR"); d != "" {
		tried = append(tried, filepath.Join(d, name))
	}
	if root, err := moduleRoot(); err == nil {
		tried = append(tried, filepath.Join(root, ".cache", "tools", name))
	}
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("testenv: no %s (looked in %v and PATH): run `make test-deps` (scripts/test-deps.sh installs it)", name, tried)
}
