package nemesis

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ddstore/ddstore/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestModel: the checker accepts what the catalog may do and refuses what
// it may not, with unknown outcomes taken as maybe-applied.
func TestModel(t *testing.T) {
	const end = 1000
	op := func(kind Kind, call, ret int64, out Outcome, version string) *Op {
		return &Op{Kind: kind, Name: "k", Call: call, Return: ret, Outcome: out, Version: version}
	}
	for _, tc := range []struct {
		name string
		ops  []*Op
		want porcupine.CheckResult
	}{
		{"read after put", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindStat, 20, 30, OK, "v1")}, porcupine.Ok},
		{"stale read after put", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindStat, 20, 30, OK, absent)}, porcupine.Illegal},
		{"concurrent read", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindStat, 5, 30, OK, absent)}, porcupine.Ok},
		{"unknown put seen late", []*Op{op(KindPut, 0, 10, Unknown, "v1"), op(KindStat, 20, 30, OK, absent), op(KindGet, 40, 50, OK, "v1")}, porcupine.Ok},
		{"unknown put never applied", []*Op{op(KindPut, 0, 10, Unknown, "v1"), op(KindStat, 20, 30, OK, absent), op(KindGet, 1100, 1200, NotFound, absent)}, porcupine.Ok},
		{"unknown put applied after the end", []*Op{op(KindPut, 0, 10, Unknown, "v1"), op(KindGet, 1100, 1200, NotFound, absent), op(KindGet, 1300, 1400, OK, "v1")}, porcupine.Illegal},
		{"failed put applied", []*Op{op(KindPut, 0, 10, Failed, "v1"), op(KindStat, 20, 30, OK, "v1")}, porcupine.Illegal},
		{"put over a file", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindPut, 20, 30, OK, "v2")}, porcupine.Illegal},
		{"exists", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindPut, 20, 30, Exists, "v2"), op(KindStat, 40, 50, OK, "v1")}, porcupine.Ok},
		{"exists on nothing", []*Op{op(KindPut, 20, 30, Exists, "v2")}, porcupine.Illegal},
		{"overwrite", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindOverwrite, 20, 30, OK, "v2"), op(KindList, 40, 50, OK, "")}, porcupine.Illegal},
		{"rm of nothing", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindDelete, 20, 30, NotFound, "")}, porcupine.Illegal},
		{"lost rm", []*Op{op(KindPut, 0, 10, OK, "v1"), op(KindDelete, 20, 30, OK, ""), op(KindStat, 40, 50, OK, "v1")}, porcupine.Illegal},
		{"replaced names the current version", []*Op{op(KindPut, 0, 10, OK, "v1"),
			{Kind: KindOverwrite, Name: "k", Call: 20, Return: 30, Outcome: Replaced, Version: "v2", Now: "v1", NowKnown: true}}, porcupine.Ok},
		{"replaced names another version", []*Op{op(KindPut, 0, 10, OK, "v1"),
			{Kind: KindOverwrite, Name: "k", Call: 20, Return: 30, Outcome: Replaced, Version: "v2", Now: "v3", NowKnown: true}}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, o := range tc.ops {
				o.ID = i
				if o.Kind == KindList {
					o.Listed = map[string]string{}
					if o.Version != "" {
						o.Listed["k"] = o.Version
					}
				}
			}
			v := checkLinearizable(tc.ops, []string{"k"}, end, time.Minute)
			if v.Result != tc.want {
				t.Fatalf("verdict %s, want %s:\n%s", v.Result, tc.want, describeOps(tc.ops))
			}
			if v.Result == porcupine.Illegal {
				path := filepath.Join(t.TempDir(), "v.html")
				if err := porcupine.VisualizePath(model(), v.Info, path); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestClassify: what a write's error says about its effect.
func TestClassify(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "leader lost")
	for _, tc := range []struct {
		kind Kind
		err  error
		want Outcome
	}{
		{KindPut, nil, OK},
		{KindPut, fmt.Errorf("commit %q: %w", "k", unavailable), Unknown},
		{KindPut, fmt.Errorf("upload: %w", unavailable), Failed},
		{KindPut, fmt.Errorf("check %q before upload: %w", "k", status.Error(codes.DeadlineExceeded, "x")), Failed},
		{KindPut, fmt.Errorf("commit %q: %w", "k", status.Error(codes.AlreadyExists, "x")), Exists},
		{KindPut, fmt.Errorf("commit %q: %w", "k", status.Error(codes.FailedPrecondition, "too few copies")), Failed},
		{KindOverwrite, fmt.Errorf("commit %q: %w: %w", "k", client.ErrReplaced, status.Error(codes.FailedPrecondition, "x")), Replaced},
		{KindDelete, status.Error(codes.NotFound, "x"), NotFound},
		{KindDelete, status.Error(codes.DeadlineExceeded, "x"), Unknown},
		{KindDelete, errors.New("context deadline exceeded"), Unknown},
	} {
		ctxErr := error(nil)
		if tc.err != nil && tc.err.Error() == "context deadline exceeded" {
			ctxErr = tc.err
		}
		if got := classifyWrite(tc.kind, tc.err, ctxErr); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.kind, tc.err, got, tc.want)
		}
	}
	v, ok := replacedNow(errors.New(`commit "k": client: a concurrent put replaced the file first; this put was not committed: rpc error: code = FailedPrecondition desc = catalog: file changed: file "k" changed after this overwrite began (now the version created at 2026-11-29T10:00:00Z, BLAKE3 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff)`))
	if !ok || v != "0011223344556677" {
		t.Errorf("replacedNow: %q %v", v, ok)
	}
	if v, ok := replacedNow(errors.New(`file "k" changed after this overwrite began (deleted)`)); !ok || v != absent {
		t.Errorf("replacedNow (deleted): %q %v", v, ok)
	}
}
