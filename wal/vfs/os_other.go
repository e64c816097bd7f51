//go:build !linux

package vfs

// Sync is fsync on systems without fdatasync.
func (f *osFile) Sync() error { return f.File.Sync() }

// Preallocate extends the file with truncate on systems without fallocate.
func (f *osFile) Preallocate(off, n int64) error {
	st, err := f.File.Stat()
	if err != nil {
		return err
	}
	if st.Size() < off+n {
		return f.File.Truncate(off + n)
	}
	return nil
}
