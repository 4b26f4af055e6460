package nemesis

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is the kind of a client operation.
type Kind string

// The operations the clients run.
const (
	KindPut       Kind = "put"       // put without overwrite: creates the file
	KindOverwrite Kind = "overwrite" // put --overwrite: replaces the version it began with
	KindDelete    Kind = "rm"
	KindStat      Kind = "stat"
	KindList      Kind = "ls"
	KindGet       Kind = "get"
)

// Kinds lists every operation kind, in report order.
func Kinds() []Kind {
	return []Kind{KindPut, KindOverwrite, KindDelete, KindStat, KindList, KindGet}
}

// Outcome is what a client learned of an operation.
type Outcome string

// The outcomes.
const (
	// OK: the operation took effect (a write) or answered (a read).
	OK Outcome = "ok"
	// NotFound: a definite answer that the file does not exist (rm, stat,
	// get); nothing changed.
	NotFound Outcome = "not-found"
	// Exists: a put without overwrite was refused because another version
	// exists; nothing changed.
	Exists Outcome = "exists"
	// Replaced: an overwrite lost a race (client.ErrReplaced); nothing
	// changed.
	Replaced Outcome = "replaced"
	// Failed: a definite failure that changed nothing.
	Failed Outcome = "failed"
	// Unknown: the client cannot tell whether a write took effect (its
	// deadline passed, or the node became unavailable after the commit may
	// have been proposed). Reads with this outcome are dropped from the
	// check.
	Unknown Outcome = "unknown"
)

// absent is the version of a name that has no file.
const absent = ""

// Op is one recorded client operation. Times are nanoseconds since the run
// began.
type Op struct {
	ID     int
	Worker int
	Kind   Kind
	Name   string
	// Version is what a write stores (the new file's version), or what a
	// read saw (absent: no file). For ls, Listed holds what it saw.
	Version string
	Listed  map[string]string // ls: name -> version, for the names of the key space
	Call    int64
	Return  int64
	Outcome Outcome
	// Now is, for a Replaced overwrite, the version the cluster named as
	// current when it refused; NowKnown is false if the message named
	// none.
	Now      string
	NowKnown bool
	Err      string

	data    []byte // a final get's bytes
	corrupt bool   // a get's bytes did not match its manifest
}

// succeeded reports whether the cluster gave a definite answer.
func (o *Op) succeeded() bool {
	switch o.Outcome {
	case OK, NotFound, Exists, Replaced:
		return true
	}
	return false
}

// mutates reports whether the op may have changed its name's state.
func (o *Op) mutates() bool {
	switch o.Kind {
	case KindPut, KindOverwrite, KindDelete:
		return o.Outcome == OK || o.Outcome == Unknown
	}
	return false
}

// history collects operations from concurrent workers.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []*Op
}

func newHistory(start time.Time) *history { return &history{start: start} }

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

// add records a finished operation and gives it an ID.
func (h *history) add(o *Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.ID = len(h.ops)
	h.ops = append(h.ops, o)
}

// snapshot returns the operations recorded so far, by invocation time.
func (h *history) snapshot() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := slices.Clone(h.ops)
	slices.SortStableFunc(out, func(a, b *Op) int { return int(a.Call - b.Call) })
	return out
}

// uncertain reports the gRPC codes after which a write may or may not have
// been applied: the node did not say what happened.
func uncertain(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.Aborted, codes.DataLoss:
		return true
	}
	return false
}

// preCommit reports errors client.Put returns before it asks for the
// commit (by their prefixes): such a put certainly changed nothing.
func preCommit(err error) bool {
	for _, p := range []string{"check ", "ask which chunks", "upload: ", "server named a malformed chunk"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// classifyWrite says what a put, overwrite or rm learned from err. ctxErr
// is the op's context error (its deadline).
func classifyWrite(kind Kind, err, ctxErr error) Outcome {
	if err == nil {
		return OK
	}
	if kind != KindDelete && preCommit(err) {
		return Failed
	}
	if errors.Is(err, client.ErrReplaced) {
		return Replaced
	}
	code := status.Code(err)
	switch {
	case code == codes.NotFound && kind == KindDelete:
		return NotFound
	case code == codes.AlreadyExists && kind == KindPut:
		return Exists
	case ctxErr != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return Unknown
	case uncertain(code):
		return Unknown
	}
	return Failed
}

// classifyRead says what a stat or get learned from err.
func classifyRead(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case status.Code(err) == codes.NotFound:
		return NotFound
	}
	return Unknown
}

// nowRE finds the version an ErrReplaced message names as current:
// "(now the version created at ..., BLAKE3 <hex>)" or "(deleted)".
var nowRE = regexp.MustCompile(`changed after this overwrite began \((?:deleted|now the version created at [^,]*, BLAKE3 ([0-9a-f]{64}))\)`)

// replacedNow reads the current version from an ErrReplaced message.
func replacedNow(err error) (version string, ok bool) {
	m := nowRE.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	if m[1] == "" {
		return absent, true
	}
	return versionOfHex(m[1]), true
}

// versionOfHex is the version of a file whose BLAKE3 is the hex string h.
func versionOfHex(h string) string {
	if len(h) > versionLen {
		return h[:versionLen]
	}
	return h
}

// versionOf is the version of a file whose BLAKE3 is sum.
func versionOf(sum []byte) string {
	if len(sum) == 0 {
		return absent
	}
	return versionOfHex(fmt.Sprintf("%x", sum))
}

// versionLen is how many hex digits of a file's BLAKE3 name its version:
// every put writes unique content, so 64 bits tell versions apart.
const versionLen = 16
