package vfs

import "io"

// FS is the filesystem the write-ahead log writes through.
type FS interface {
	// Create creates the named file for reading and writing, truncating it
	// if it exists.
	Create(name string) (File, error)
	// Open opens the named file for reading only.
	Open(name string) (File, error)
	// OpenReadWrite opens an existing file for reading and writing without
	// truncating it.
	OpenReadWrite(name string) (File, error)
	// Remove removes the named file.
	Remove(name string) error
	// Rename renames oldname to newname, replacing newname if it exists.
	Rename(oldname, newname string) error
	// MkdirAll creates dir and any missing parents.
	MkdirAll(dir string) error
	// List returns the names (not paths) of the entries in dir, in no
	// particular order.
	List(dir string) ([]string, error)
	// OpenDir opens a directory so that its entries can be made durable with
	// Sync.
	OpenDir(dir string) (File, error)
}

// File is an open file. Sync makes the file's data durable (fdatasync: data
// and the size, not necessarily other metadata); on a directory handle it
// makes the directory's entries durable.
type File interface {
	io.Writer
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes written data durable (fdatasync).
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Preallocate reserves space for [off, off+n) and extends the file's size
	// to at least off+n.
	Preallocate(off, n int64) error
	// Size returns the file's current size.
	Size() (int64, error)
}

// Unlinker is implemented by files that can tell whether their directory
// entry is gone (the file or directory was removed while open). The log
// checks it before it reports data durable: data synced to a file that no
// longer has a name would not be found after a restart.
type Unlinker interface {
	Unlinked() (bool, error)
}

// IsUnlinked reports whether f is known to have lost its name; false when
// f cannot tell.
func IsUnlinked(f File) (bool, error) {
	if u, ok := f.(Unlinker); ok {
		return u.Unlinked()
	}
	return false, nil
}
