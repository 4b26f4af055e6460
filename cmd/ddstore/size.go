package main

import (
	"fmt"
	"github.com/ddstore/ddstore/internal/units"
	"strconv"
	"strings"
)

// SizeFlag is a byte count flag that takes units: 512KiB, 64MiB, 1GiB, 2GB.
type SizeFlag int64

func (s *SizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }
func (s *SizeFlag) Type() string   { return "size" }

// Set parses a size with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB,
// GB, TB; K, M, G, T mean the binary units).
func (s *SizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = SizeFlag(n)
	return nil
}

// ParseSize parses a byte count with an optional unit.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || f < 0 {
		return 0, fmt.Errorf("%q is not a size (try 64MiB, 1GiB)", v)
	}
	return int64(f * mult), nil
}

// humanSize writes a byte count for people (units.Bytes); exact bytes stay
// in --json.
func humanSize(n int64) string { return units.Bytes(n) }
