package ferretpg

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestIndexName: short names keep the "<table>_id_gin" of the SQL operators
// ran by hand; long ones fit PostgreSQL's 63 bytes and stay distinct.
func TestIndexName(t *testing.T) {
	if got := indexName("chunks_chunks_c673a13d"); got != "chunks_chunks_c673a13d_id_gin" {
		t.Errorf("short: %q", got)
	}
	a := indexName(strings.Repeat("a", 55) + "_1234abcd")
	b := indexName(strings.Repeat("a", 55) + "_9876fedc")
	if len(a) > 63 || len(b) > 63 || a == b || !strings.HasSuffix(a, "_id_gin") {
		t.Errorf("long: %q %q", a, b)
	}
	if u := indexName(strings.Repeat("é", 40)); len(u) > 63 || !strings.HasSuffix(u, "_id_gin") || !utf8.ValidString(u) {
		t.Errorf("multi-byte: %q", u)
	}
}
