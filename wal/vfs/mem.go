package vfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"sync"
)

// SectorSize is the unit in which MemFS.CrashClone keeps or drops unsynced
// data.
const SectorSize = 512

// MemFS is an in-memory FS that can simulate a crash (power loss). It tracks,
// for every file, the content as of its last Sync, and for every directory
// the entries as of its last directory Sync. CrashClone returns what a
// restarted machine would see: synced state plus a random share of unsynced
// state. A MemFS is safe for concurrent use.
type MemFS struct {
	mu sync.Mutex
	// files is the current namespace: path -> node.
	files map[string]*memNode
	// synced is the namespace as of the last Sync of each directory.
	synced map[string]*memNode
	dirs   map[string]bool
}

type memNode struct {
	data    []byte // current content
	durable []byte // content as of the last Sync
}

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS {
	return &MemFS{
		files:  make(map[string]*memNode),
		synced: make(map[string]*memNode),
		dirs:   map[string]bool{"/": true, ".": true},
	}
}

var _ FS = (*MemFS)(nil)

func clean(name string) string { return path.Clean(name) }

func notExist(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

func (m *MemFS) checkDirLocked(op, name string) error {
	if !m.dirs[path.Dir(name)] {
		return notExist(op, path.Dir(name))
	}
	return nil
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkDirLocked("create", name); err != nil {
		return nil, err
	}
	n := &memNode{}
	m.files[name] = n
	return &memFile{fs: m, node: n, name: name, writable: true}, nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) { return m.open("open", name, false) }

// OpenReadWrite implements FS.
func (m *MemFS) OpenReadWrite(name string) (File, error) { return m.open("open", name, true) }

func (m *MemFS) open(op, name string, writable bool) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[name]
	if !ok {
		return nil, notExist(op, name)
	}
	return &memFile{fs: m, node: n, name: name, writable: writable}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return notExist("remove", name)
	}
	delete(m.files, name)
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[oldname]
	if !ok {
		return notExist("rename", oldname)
	}
	if err := m.checkDirLocked("rename", newname); err != nil {
		return err
	}
	delete(m.files, oldname)
	m.files[newname] = n
	return nil
}

// MkdirAll implements FS. Directories are durable at once.
func (m *MemFS) MkdirAll(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := dir; ; d = path.Dir(d) {
		m.dirs[d] = true
		if d == "/" || d == "." {
			return nil
		}
	}
}

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, notExist("list", dir)
	}
	var names []string
	for p := range m.files {
		if path.Dir(p) == dir {
			names = append(names, path.Base(p))
		}
	}
	for d := range m.dirs {
		if d != dir && path.Dir(d) == dir {
			names = append(names, path.Base(d))
		}
	}
	sort.Strings(names)
	return names, nil
}

// OpenDir implements FS. Sync on the returned handle makes the directory's
// current entries durable.
func (m *MemFS) OpenDir(dir string) (File, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, notExist("opendir", dir)
	}
	return &memFile{fs: m, name: dir, dir: true}, nil
}

// ReadFile returns a copy of the named file's current content (test helper).
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[clean(name)]
	if !ok {
		return nil, notExist("read", name)
	}
	return append([]byte(nil), n.data...), nil
}

// WriteFile replaces the named file's content and marks it durable (test
// helper for corrupting files).
func (m *MemFS) WriteFile(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[clean(name)]
	if !ok {
		return notExist("write", name)
	}
	n.data = append([]byte(nil), data...)
	n.durable = append([]byte(nil), data...)
	return nil
}

// CrashClone returns a new MemFS holding what survives a power loss at this
// moment: each directory's entries as of its last Sync, and in each surviving
// file its synced bytes plus, sector by sector, a random choice between the
// synced and the unsynced content (and a random choice between the synced
// and the current size). With a nil rng nothing unsynced survives. The
// receiver is left untouched, so goroutines still
// using it do not affect the clone.
func (m *MemFS) CrashClone(rng *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewMemFS()
	for d := range m.dirs {
		c.dirs[d] = true
	}
	done := make(map[*memNode]*memNode)
	names := make([]string, 0, len(m.synced))
	for p := range m.synced {
		names = append(names, p)
	}
	sort.Strings(names) // deterministic for a given rng
	for _, p := range names {
		n := m.synced[p]
		cn, ok := done[n]
		if !ok {
			cn = &memNode{data: crashContent(rng, n)}
			cn.durable = append([]byte(nil), cn.data...)
			done[n] = cn
		}
		c.files[p] = cn
		c.synced[p] = cn
	}
	return c
}

func crashContent(rng *rand.Rand, n *memNode) []byte {
	size := len(n.durable)
	if rng == nil {
		return append([]byte(nil), n.durable...)
	}
	if len(n.data) != size && rng.IntN(2) == 0 {
		size = len(n.data)
	}
	out := make([]byte, size)
	for off := 0; off < size; off += SectorSize {
		end := min(off+SectorSize, size)
		src := n.durable
		if rng.IntN(2) == 0 {
			src = n.data
		}
		if off < len(src) {
			copy(out[off:end], src[off:min(end, len(src))])
		}
	}
	return out
}

// memFile is an open MemFS file or directory.
type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	writable bool
	dir      bool
	pos      int64
	closed   bool
}

var errClosed = errors.New("vfs: file closed")

func (f *memFile) check(write bool) error {
	if f.closed {
		return errClosed
	}
	if f.dir {
		return &fs.PathError{Op: "io", Path: f.name, Err: errors.New("is a directory")}
	}
	if write && !f.writable {
		return &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrPermission}
	}
	return nil
}

func (f *memFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(true); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, errors.New("vfs: negative offset")
	}
	end := off + int64(len(p))
	if end > int64(len(f.node.data)) {
		f.node.data = growTo(f.node.data, end)
	}
	copy(f.node.data[off:end], p)
	return len(p), nil
}

func growTo(b []byte, n int64) []byte {
	if int64(cap(b)) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, int64(2*cap(b))))
	copy(nb, b)
	return nb
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(false); err != nil {
		return 0, err
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errClosed
	}
	if f.dir {
		m := f.fs
		for p := range m.synced {
			if path.Dir(p) == f.name {
				delete(m.synced, p)
			}
		}
		for p, n := range m.files {
			if path.Dir(p) == f.name {
				m.synced[p] = n
			}
		}
		return nil
	}
	f.node.durable = append(f.node.durable[:0], f.node.data...)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(true); err != nil {
		return err
	}
	if size < int64(len(f.node.data)) {
		clear(f.node.data[size:])
		f.node.data = f.node.data[:size]
	} else {
		f.node.data = growTo(f.node.data, size)
	}
	return nil
}

func (f *memFile) Preallocate(off, n int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(true); err != nil {
		return err
	}
	if off+n > int64(len(f.node.data)) {
		f.node.data = growTo(f.node.data, off+n)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(false); err != nil {
		return 0, err
	}
	return int64(len(f.node.data)), nil
}

// Unlinked implements Unlinker: the file's name, or the directory, is gone.
func (f *memFile) Unlinked() (bool, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.dir {
		return !f.fs.dirs[f.name], nil
	}
	for _, n := range f.fs.files {
		if n == f.node {
			return false, nil
		}
	}
	return true, nil
}

// RemoveAll removes dir and everything under it (test helper: storage
// that disappears under a running log).
func (m *MemFS) RemoveAll(dir string) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.files {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			delete(m.files, p)
		}
	}
	for d := range m.dirs {
		if d == dir || strings.HasPrefix(d, dir+"/") {
			delete(m.dirs, d)
		}
	}
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.closed = true
	return nil
}

// String names the MemFS's files (for test failure messages).
func (m *MemFS) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	names := make([]string, 0, len(m.files))
	for p := range m.files {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		b.WriteString(p)
		b.WriteByte('\n')
	}
	return b.String()
}
