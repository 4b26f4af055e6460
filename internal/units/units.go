// Package units writes byte counts for people, in binary units: 512 B,
// 1.50 KiB, 24.0 MiB, 1.02 GiB. The CLI, the demo and the web console print
// sizes through it; exact byte counts stay in JSON output.
package units

import "fmt"

// Bytes writes n in binary units, with three significant digits from KiB on.
func Bytes(n int64) string {
	if n < 1<<10 && n > -(1<<10) {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if f < 1024 && f > -1024 || u == "TiB" {
			if f < 10 && f > -10 {
				return fmt.Sprintf("%.2f %s", f, u)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%d B", n)
}
