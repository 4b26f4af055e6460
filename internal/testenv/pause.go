package testenv

import (
	"errors"
	"syscall"
)

// Pause freezes the FerretDB this package started (SIGSTOP): it keeps its
// socket open and answers nothing, as a hung database does. Resume undoes it.
func (m *Mongo) Pause() error { return m.signal(syscall.SIGSTOP) }

// Resume lets a paused FerretDB run again (SIGCONT).
func (m *Mongo) Resume() error { return m.signal(syscall.SIGCONT) }

func (m *Mongo) signal(sig syscall.Signal) error {
	if m == nil || m.cmd == nil || m.cmd.Process == nil {
		return errors.New("testenv: not a MongoDB server this package started")
	}
	return m.cmd.Process.Signal(sig)
}
