package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shardfn/shardfn/wal/vfs"
)

// FS is the filesystem interface the log writes through (see package vfs).
type FS = vfs.FS

// File is an open file of an FS.
type File = vfs.File

const (
	// DefaultSegmentSize is the default Options.SegmentSize (64 MiB).
	DefaultSegmentSize = 64 << 20
	// DefaultBufferSize is the default Options.BufferSize (4 MiB).
	DefaultBufferSize = 4 << 20
	// MinSegmentSize is the smallest Options.SegmentSize accepted.
	MinSegmentSize = 1 << 10
	// MaxSegmentSize is the largest Options.SegmentSize accepted (the
	// segment header records the size in 32 bits).
	MaxSegmentSize = 1<<32 - 1
)

// Options configures a Log. The zero value plus Dir is valid.
type Options struct {
	// Dir is the directory holding the segment files. Required; created if
	// missing. One Log at a time may use a directory.
	Dir string
	// FS is the filesystem. Default: vfs.Default, the operating system.
	FS FS
	// SegmentSize is the size in bytes of each segment file, header
	// included. Segment files are preallocated to this size and recycled.
	// A record must fit in one segment (its frame is 24 bytes plus the
	// payload, padded to 8). Default 64 MiB; range [MinSegmentSize,
	// MaxSegmentSize].
	SegmentSize int64
	// MaxBatchDelay is how long the flusher may wait, after it finds data to
	// write, to gather more before it writes and syncs. 0 (the default)
	// means flush as soon as the previous sync returns, which already
	// batches everything appended during that sync. It must be >= 0. A
	// batch reaching BufferSize/2 bytes is flushed without waiting.
	MaxBatchDelay time.Duration
	// BufferSize is the number of bytes that may wait for the flusher;
	// Append blocks while the pending buffer holds this much (a larger batch
	// is accepted alone). Default 4 MiB; must be > 0.
	BufferSize int
	// OnDurable, if set, is called by the flusher goroutine after each
	// successful sync with the new durable end position: once per batch,
	// never concurrently, never after a failure. It must not block for long
	// and must not call Close.
	OnDurable func(durable LSN)
	// OnFlush, if set, is called by the flusher goroutine after each
	// successful batch with the bytes written and the time spent in
	// fdatasync, for metrics. Same rules as OnDurable.
	OnFlush func(bytes int, sync time.Duration)
	// KnownDurable is a position the caller knows was durable (for the
	// engine, its checkpoint's): Open refuses a log that ends before it,
	// naming the missing range, before it changes anything on disk.
	// KnownDurableWhy says where it comes from, for that message.
	KnownDurable    LSN
	KnownDurableWhy string
	// AcceptLoss opens a log that was shortened (a segment cut or truncated
	// after it was written, or ending before KnownDurable) instead of
	// refusing it: the missing records are lost. Default false.
	AcceptLoss bool
	// Manual runs no flusher goroutine: the caller writes and syncs with
	// Flush, and Append never blocks. For a deterministic simulation.
	Manual bool
	// Logger receives one line per event that matters (open, torn tail
	// dropped, failure). Default slog.Default().
	Logger *slog.Logger
}

// EnsureDefaults fills in the zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.BufferSize == 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate reports the first invalid field, if any. Call EnsureDefaults
// first.
func (o *Options) Validate() error {
	switch {
	case o.Dir == "":
		return errors.New("wal: Options.Dir is required")
	case o.FS == nil:
		return errors.New("wal: Options.FS is nil")
	case o.SegmentSize < MinSegmentSize || o.SegmentSize > MaxSegmentSize:
		return fmt.Errorf("wal: Options.SegmentSize %d out of range [%d, %d]", o.SegmentSize, MinSegmentSize, int64(MaxSegmentSize))
	case o.MaxBatchDelay < 0:
		return fmt.Errorf("wal: Options.MaxBatchDelay %v is negative", o.MaxBatchDelay)
	case o.BufferSize <= 0:
		return fmt.Errorf("wal: Options.BufferSize %d must be positive", o.BufferSize)
	case o.Logger == nil:
		return errors.New("wal: Options.Logger is nil")
	}
	return nil
}
