package testenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Tmpfs is a small RAM file system mounted for a test, so that a test can
// really fill a disk. Mounting needs root (the test suite runs as root).
type Tmpfs struct {
	Dir string
}

// MountTmpfs mounts a tmpfs of size bytes on dir (created if missing). Call
// Unmount when done.
func MountTmpfs(dir string, size int64) (*Tmpfs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testenv: tmpfs: %w", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		return nil, fmt.Errorf("testenv: mount a tmpfs on %s (needs root): %w", dir, err)
	}
	return &Tmpfs{Dir: dir}, nil
}

// Unmount unmounts the file system, lazily if something still holds it
// open (a node that is being killed, say).
func (t *Tmpfs) Unmount() error {
	if err := unix.Unmount(t.Dir, 0); err != nil {
		if err2 := unix.Unmount(t.Dir, unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("testenv: unmount %s: %w", t.Dir, errors.Join(err, err2))
		}
	}
	return nil
}

// Free returns the bytes free for an unprivileged writer.
func (t *Tmpfs) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(t.Dir, &st); err != nil {
		return 0, fmt.Errorf("testenv: statfs %s: %w", t.Dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Fill writes the file name under the tmpfs until the file system is full
// (the write fails with ENOSPC) and returns how many bytes it wrote. Remove
// the file to free the space again.
func (t *Tmpfs) Fill(name string) (int64, error) {
	f, err := os.OpenFile(filepath.Join(t.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("testenv: fill %s: %w", t.Dir, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("testenv: fill %s: %w", t.Dir, err)
		}
	}
}

// Shrink truncates a file written by Fill to keep bytes, freeing the rest.
func (t *Tmpfs) Shrink(name string, keep int64) error {
	if err := os.Truncate(filepath.Join(t.Dir, name), keep); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("testenv: shrink %s: %w", name, err)
	}
	return nil
}
