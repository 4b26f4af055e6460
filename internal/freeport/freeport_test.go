package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, are free, and are never handed
// out twice by one process.
func TestFreePorts(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		ports, err := Get(2)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p < portLow || p >= portHigh {
				t.Fatalf("port %d outside [%d, %d)", p, portLow, portHigh)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatalf("port %d not free: %v", p, err)
			}
			l.Close()
		}
	}
}
