// Package vfs is the small filesystem interface the write-ahead log uses,
// with three implementations:
//
//   - Default: the operating system. File.Sync is fdatasync(2) on Linux,
//     Preallocate is fallocate(2), and a directory handle's Sync is fsync(2)
//     on the directory.
//   - MemFS: an in-memory filesystem that can simulate a crash. It keeps what
//     was synced (file data by File.Sync, directory entries by syncing the
//     directory) plus a random share of what was not, chosen sector by
//     sector, like a disk that lost power with a dirty page cache.
//   - ErrorFS: a wrapper that fails exactly the i-th operation, for fault
//     injection tests that try i = 0, 1, 2, ... until a workload passes.
//
// Names are slash-separated paths as the OS implementation receives them;
// the WAL passes filepath.Join(dir, name).
//
// Concurrency: every FS and File implementation here is safe for concurrent
// use by several goroutines, as long as a single File is not closed while
// another goroutine is using it.
package vfs
