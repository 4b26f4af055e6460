package main

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit status of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as
// shells report it).
const exitInterrupted = 130

// interruptedError is a command stopped by a signal; its message says how to
// pick up where it stopped. ddstore exits with exitInterrupted.
type interruptedError struct{ err error }

func (e interruptedError) Error() string { return e.err.Error() }
func (e interruptedError) Unwrap() error { return e.err }

// reportedError is a failure whose details were already written to stderr,
// one line each (rm of several names): main prints nothing more and exits 1.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

// tidy cleans a one-line error message for people: a code said twice
// ("not found: catalog: not found: no file named "x"") is said once, and
// the duplicate-name refusal names the flag that overrides it.
func tidy(msg string) string {
	for _, p := range [][2]string{
		{"not found", "catalog: not found"},
		{"already exists", "catalog: already exists"},
		{"invalid argument", "catalog: invalid"},
	} {
		msg = strings.ReplaceAll(msg, p[0]+": "+p[1]+": ", p[0]+": ")
		msg = strings.ReplaceAll(msg, p[0]+": "+p[1], p[0])
	}
	return strings.Replace(msg, "(use overwrite to replace it)", "(give --overwrite to replace it)", 1)
}

// connectHint says what to check when no node at --addr answered at all.
func connectHint(msg string) string {
	for _, s := range []string{"connection refused", "no such host", "i/o timeout", "did not answer within", "connect: ", "context deadline exceeded"} {
		if strings.Contains(msg, s) && strings.Contains(msg, "unavailable") || strings.Contains(msg, s) && strings.HasPrefix(s, "connection refused") {
			return " (no node answered: is the cluster running? check --addr / DDSTORE_ADDR)"
		}
	}
	return ""
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,:=+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// noAnswer is a call no node at --addr answered: refused, unresolvable,
// or silent. Its message says so once and what to check.
type noAnswer struct {
	addrs string
	err   error
}

func (e noAnswer) Unwrap() error { return e.err }

func (e noAnswer) Error() string {
	prefix, _ := e.split()
	return prefix + e.short() + ": is the cluster running? check --addr / DDSTORE_ADDR"
}

// short says which addresses did not answer and why, without the hint.
func (e noAnswer) short() string {
	_, cause := e.split()
	return "no node answered at " + e.addrs + " (" + cause + ")"
}

// split separates what the command was doing ("stat x: ") from the last
// words of the connection error ("connection refused").
func (e noAnswer) split() (prefix, cause string) {
	msg := e.err.Error()
	cause = msg
	if i := strings.Index(msg, "rpc error: "); i >= 0 {
		prefix, cause = msg[:i], msg[i:]
	}
	if i := strings.LastIndex(cause, ": "); i >= 0 {
		cause = cause[i+2:]
	}
	return prefix, strings.Trim(cause, `"() `)
}

// asNoAnswer turns an error that says no node could be reached into a
// noAnswer: the client's own connection failed (refused, unresolvable) or
// its node did not answer in time. A node's answer that merely mentions a
// refused connection (one of its peers is down) and TLS and credential
// failures (which hint explains) pass through.
func asNoAnswer(addrs string, err error) error {
	var gs interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &gs) || gs.GRPCStatus().Code() != codes.Unavailable {
		return err
	}
	msg := gs.GRPCStatus().Message()
	if strings.Contains(msg, "handshake") || strings.Contains(msg, "server preface") || strings.Contains(msg, "tls:") || strings.Contains(msg, "certificate") {
		return err
	}
	if strings.HasPrefix(msg, "connection error: ") || strings.HasPrefix(msg, "node ") && strings.Contains(msg, " did not answer within ") {
		return noAnswer{addrs: addrs, err: err}
	}
	return err
}
