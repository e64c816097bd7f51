package vfs

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrInjected is the error ErrorFS returns for the failed operation.
var ErrInjected = errors.New("vfs: injected error")

// ErrorFS wraps an FS and fails exactly one operation: the one whose index
// (counting from 0, over every FS and File method except Close) equals the
// FailAt given to NewErrorFS. The failed operation has no effect. A negative
// FailAt never fails. Safe for concurrent use.
type ErrorFS struct {
	fs     FS
	failAt int64
	ops    atomic.Int64
	fired  atomic.Bool
}

// NewErrorFS returns an ErrorFS over fs that fails operation failAt.
func NewErrorFS(fs FS, failAt int64) *ErrorFS {
	return &ErrorFS{fs: fs, failAt: failAt}
}

// Ops returns the number of operations counted so far.
func (e *ErrorFS) Ops() int64 { return e.ops.Load() }

// Fired reports whether the injected error was returned.
func (e *ErrorFS) Fired() bool { return e.fired.Load() }

func (e *ErrorFS) maybeFail(op, name string) error {
	if e.ops.Add(1)-1 == e.failAt {
		e.fired.Store(true)
		return fmt.Errorf("%s %s: %w", op, name, ErrInjected)
	}
	return nil
}

var _ FS = (*ErrorFS)(nil)

// Create implements FS.
func (e *ErrorFS) Create(name string) (File, error) {
	if err := e.maybeFail("create", name); err != nil {
		return nil, err
	}
	f, err := e.fs.Create(name)
	return e.wrap(f, name, err)
}

// Open implements FS.
func (e *ErrorFS) Open(name string) (File, error) {
	if err := e.maybeFail("open", name); err != nil {
		return nil, err
	}
	f, err := e.fs.Open(name)
	return e.wrap(f, name, err)
}

// OpenReadWrite implements FS.
func (e *ErrorFS) OpenReadWrite(name string) (File, error) {
	if err := e.maybeFail("open", name); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenReadWrite(name)
	return e.wrap(f, name, err)
}

// OpenDir implements FS.
func (e *ErrorFS) OpenDir(dir string) (File, error) {
	if err := e.maybeFail("opendir", dir); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenDir(dir)
	return e.wrap(f, dir, err)
}

func (e *ErrorFS) wrap(f File, name string, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return &errorFile{e: e, f: f, name: name}, nil
}

// Remove implements FS.
func (e *ErrorFS) Remove(name string) error {
	if err := e.maybeFail("remove", name); err != nil {
		return err
	}
	return e.fs.Remove(name)
}

// Rename implements FS.
func (e *ErrorFS) Rename(oldname, newname string) error {
	if err := e.maybeFail("rename", oldname); err != nil {
		return err
	}
	return e.fs.Rename(oldname, newname)
}

// MkdirAll implements FS.
func (e *ErrorFS) MkdirAll(dir string) error {
	if err := e.maybeFail("mkdir", dir); err != nil {
		return err
	}
	return e.fs.MkdirAll(dir)
}

// List implements FS.
func (e *ErrorFS) List(dir string) ([]string, error) {
	if err := e.maybeFail("list", dir); err != nil {
		return nil, err
	}
	return e.fs.List(dir)
}

type errorFile struct {
	e    *ErrorFS
	f    File
	name string
}

func (f *errorFile) Write(p []byte) (int, error) {
	if err := f.e.maybeFail("write", f.name); err != nil {
		return 0, err
	}
	return f.f.Write(p)
}

func (f *errorFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.e.maybeFail("writeat", f.name); err != nil {
		return 0, err
	}
	return f.f.WriteAt(p, off)
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.e.maybeFail("readat", f.name); err != nil {
		return 0, err
	}
	return f.f.ReadAt(p, off)
}

func (f *errorFile) Sync() error {
	if err := f.e.maybeFail("sync", f.name); err != nil {
		return err
	}
	return f.f.Sync()
}

func (f *errorFile) Truncate(size int64) error {
	if err := f.e.maybeFail("truncate", f.name); err != nil {
		return err
	}
	return f.f.Truncate(size)
}

func (f *errorFile) Preallocate(off, n int64) error {
	if err := f.e.maybeFail("preallocate", f.name); err != nil {
		return err
	}
	return f.f.Preallocate(off, n)
}

func (f *errorFile) Size() (int64, error) {
	if err := f.e.maybeFail("size", f.name); err != nil {
		return 0, err
	}
	return f.f.Size()
}

func (f *errorFile) Close() error { return f.f.Close() }

// Unlinked implements Unlinker by asking the wrapped file.
func (f *errorFile) Unlinked() (bool, error) { return IsUnlinked(f.f) }
