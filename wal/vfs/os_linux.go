//go:build linux

package vfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// Sync is fdatasync(2) for regular files and fsync(2) for directories.
func (f *osFile) Sync() error {
	for {
		err := unix.Fdatasync(f.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}

// Preallocate is fallocate(2) with mode 0 (the size grows). Filesystems
// without fallocate get the size extended by truncate instead.
func (f *osFile) Preallocate(off, n int64) error {
	for {
		err := unix.Fallocate(f.fd, 0, off, n)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP, unix.ENOSYS:
			st, serr := f.File.Stat()
			if serr != nil {
				return serr
			}
			if st.Size() < off+n {
				return f.File.Truncate(off + n)
			}
			return nil
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}

// Unlinked reports whether the file or directory has no link left (it was
// removed while open), from fstat's link count.
func (f *osFile) Unlinked() (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return false, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return st.Nlink == 0, nil
}
