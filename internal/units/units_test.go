package units

import "testing"

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.00 KiB"}, {1536, "1.50 KiB"},
		{24 << 20, "24.0 MiB"}, {1 << 30, "1.00 GiB"}, {1100 << 20, "1.07 GiB"}, {5 << 40, "5.00 TiB"}, {-2048, "-2.00 KiB"},
	} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
