package client

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBehindWindow is how much of a download's output may be written and
// not yet on its way to disk.
const writeBehindWindow = 8 << 20

// writeBehind writes a download to its file and hands each window of it to
// the disk as soon as it is complete (sync_file_range: start writeback),
// waiting for the window before it. Dirty pages stay within two windows, so
// the fsync at the end of the download finds almost nothing left; without
// this, a 1 GiB download whose output was synced only at the end ran at
// half the speed of one that was not synced at all. The hints are advisory:
// the final fsync is what makes the file durable.
type writeBehind struct {
	f        *os.File
	off      int64 // file offset of the next write
	released int64 // bytes from start handed to writeback
	start    int64 // offset the download began writing at
}

func newWriteBehind(f *os.File, start int64) *writeBehind {
	return &writeBehind{f: f, off: start, released: start, start: start}
}

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	fd := int(w.f.Fd())
	for w.off-w.released >= writeBehindWindow {
		unix.SyncFileRange(fd, w.released, writeBehindWindow, unix.SYNC_FILE_RANGE_WRITE)
		if prev := w.released - writeBehindWindow; prev >= w.start {
			unix.SyncFileRange(fd, prev, writeBehindWindow,
				unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		}
		w.released += writeBehindWindow
	}
	return n, err
}
