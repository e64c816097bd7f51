package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/wal/vfs"
)

// LSN is a byte position in the logical log stream. LSNs increase
// monotonically across segments with no gaps; a record's LSN is the position
// of its frame's first byte, and the end position returned by Append is the
// LSN the next record will get.
type LSN uint64

var (
	// ErrClosed is returned by operations on a closed Log.
	ErrClosed = errors.New("wal: closed")
	// ErrCorrupt is wrapped by errors that report corruption in the log
	// files; the message names the segment file and offset.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrFailed is wrapped (together with the cause) by every error returned
	// after a write or sync failed and the log stopped.
	ErrFailed = errors.New("wal: failed after an I/O error")
	// ErrLost is wrapped by the error of an Open that finds a log shorter
	// than it was (a file cut by hand or lost): the message names the
	// segment and the missing range. Options.AcceptLoss opens it anyway.
	ErrLost = errors.New("wal: log records lost")
	// ErrRecordTooLarge is returned by Append for a record whose frame does
	// not fit in one segment.
	ErrRecordTooLarge = errors.New("wal: record too large for a segment")
)

// cut marks where, in a pending buffer, the bytes of a new segment start.
type cut struct {
	off  int
	num  uint64
	base LSN
}

// Log is a segmented write-ahead log with group commit. Append, WaitDurable,
// DurableLSN, EndLSN, FirstLSN, NewReader, RemoveBefore and Err are safe for
// concurrent use; Close must be called once, after the last Append. A Log
// owns its directory while open.
type Log struct {
	opts    Options
	fs      vfs.FS
	dirFile vfs.File
	segCap  int64 // bytes of frames a segment holds

	durable atomic.Uint64
	failErr atomic.Pointer[error]
	stopped atomic.Bool // the flusher has exited

	// mu guards the pending buffer and the assignment of LSNs.
	mu struct {
		sync.Mutex
		space   sync.Cond // signalled when the flusher takes the buffer or stops
		buf     []byte    // pending frames, sealed
		cuts    []cut     // segment starts within buf
		end     LSN       // next LSN to assign
		segNum  uint64    // segment that end falls in
		segBase LSN       // its base
		closing bool
		closed  bool
		failed  error
	}

	// waitMu and waitCond release WaitDurable callers: the flusher
	// broadcasts once per batch (and when it stops).
	waitMu   sync.Mutex
	waitCond sync.Cond

	wake    chan struct{} // buffer went from empty to non-empty, or closing
	full    chan struct{} // buffer reached BufferSize/2 (MaxBatchDelay only)
	closeCh chan struct{}
	done    chan struct{} // flusher exited

	// Owned by the flusher goroutine (and by Open before it starts).
	w struct {
		f     vfs.File
		num   uint64
		base  LSN
		next  LSN // LSN of the next byte to write
		dirty bool
		// syncTime is the time spent in fdatasync during the current batch.
		syncTime time.Duration
		spare    []byte
		cuts     []cut
		hdr      [segmentHeaderSize]byte
	}

	// segMu guards segs and pool.
	segMu sync.Mutex
	segs  []segment // live segments, oldest first; the last is active
	pool  []string  // paths of files kept for recycling
}

func (l *Log) path(name string) string { return filepath.Join(l.opts.Dir, name) }

// Open opens (creating if needed) the log in opts.Dir and recovers it: it
// validates every segment, cuts a torn tail off the last one, refuses
// mid-log corruption with an error wrapping ErrCorrupt that names the
// segment file and offset, and starts a new segment for appends. The
// recovered records are readable with NewReader; DurableLSN and EndLSN
// start at the recovered end.
func Open(opts Options) (*Log, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	l := &Log{
		opts:    opts,
		fs:      opts.FS,
		segCap:  opts.SegmentSize - segmentHeaderSize,
		wake:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.mu.space.L = &l.mu.Mutex
	l.waitCond.L = &l.waitMu
	if err := l.fs.MkdirAll(opts.Dir); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", opts.Dir, err)
	}
	dirFile, err := l.fs.OpenDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("wal: open directory %s: %w", opts.Dir, err)
	}
	l.dirFile = dirFile
	nextNum, end, tornBytes, err := l.recover()
	if err != nil {
		dirFile.Close()
		return nil, err
	}
	l.durable.Store(uint64(end))
	l.w.next = end
	if err = l.rollover(nextNum, end); err == nil {
		err = l.w.f.Sync()
		if err != nil {
			err = fmt.Errorf("wal: sync %s: %w", l.path(segmentName(nextNum)), err)
		}
	}
	if err != nil {
		if l.w.f != nil {
			l.w.f.Close()
		}
		dirFile.Close()
		return nil, err
	}
	l.w.dirty = false
	l.mu.end = end
	l.mu.segNum = nextNum
	l.mu.segBase = end
	l.opts.Logger.Info("wal: opened", "dir", opts.Dir, "first", l.FirstLSN(), "end", end,
		"segments", len(l.segs), "tornBytes", tornBytes)
	if opts.Manual {
		close(l.done)
	} else {
		go l.flushLoop()
	}
	return l, nil
}

// Append appends the records of b, in order and with consecutive LSNs, so
// that no other Append's records interleave with them. It copies b (which
// may be reused at once) and returns the end position after the last
// record; the first record's LSN is end minus b.Bytes(). It does not wait
// for durability: pass end to WaitDurable for that. Append blocks while
// Options.BufferSize bytes are waiting for the flusher. It does not allocate
// once the log's buffers have grown to their working size.
func (l *Log) Append(b *Batch) (end LSN, err error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(b.maxFrame) > l.segCap {
		return 0, fmt.Errorf("%w: frame of %d bytes, segment holds %d", ErrRecordTooLarge, b.maxFrame, l.segCap)
	}
	l.mu.Lock()
	for {
		if err := l.stateErrLocked(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		if len(l.mu.buf) == 0 || len(l.mu.buf)+len(b.buf) <= l.opts.BufferSize || l.opts.Manual {
			break
		}
		l.mu.space.Wait()
	}
	before := len(l.mu.buf)
	synced := LSN(l.durable.Load())
	src := b.buf
	for len(src) > 0 {
		size := frameSize(int(binary.LittleEndian.Uint32(src[4:8])))
		if int64(l.mu.end-l.mu.segBase)+int64(size) > l.segCap {
			l.mu.segNum++
			l.mu.segBase = l.mu.end
			l.mu.cuts = append(l.mu.cuts, cut{off: len(l.mu.buf), num: l.mu.segNum, base: l.mu.end})
		}
		start := len(l.mu.buf)
		l.mu.buf = append(l.mu.buf, src[:size]...)
		sealFrame(l.mu.buf[start:start+size], l.mu.end, synced)
		l.mu.end += LSN(size)
		src = src[size:]
	}
	end = l.mu.end
	after := len(l.mu.buf)
	l.mu.Unlock()
	if before == 0 && after > 0 {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	if half := l.opts.BufferSize / 2; l.opts.MaxBatchDelay > 0 && before < half && after >= half {
		select {
		case l.full <- struct{}{}:
		default:
		}
	}
	return end, nil
}

func (l *Log) stateErrLocked() error {
	if l.mu.failed != nil {
		return l.mu.failed
	}
	if l.mu.closing {
		return ErrClosed
	}
	return nil
}

// WaitDurable blocks until everything before lsn is durable (DurableLSN() >=
// lsn), and returns nil then, even if the log has since failed or closed.
// Otherwise it returns the failure (wrapping ErrFailed) or ErrClosed once
// the log stops. It waits without a timeout, also for an lsn not yet
// appended.
func (l *Log) WaitDurable(lsn LSN) error {
	if LSN(l.durable.Load()) >= lsn {
		return nil
	}
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	for {
		if LSN(l.durable.Load()) >= lsn {
			return nil
		}
		if err := l.Err(); err != nil {
			return err
		}
		if l.stopped.Load() {
			return ErrClosed
		}
		l.waitCond.Wait()
	}
}

// DurableLSN returns the durable end: every record below it has been
// written and synced.
func (l *Log) DurableLSN() LSN { return LSN(l.durable.Load()) }

// EndLSN returns the end of what has been appended (durable or not).
func (l *Log) EndLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.end
}

// FirstLSN returns the LSN of the oldest retained record (the base of the
// oldest live segment).
func (l *Log) FirstLSN() LSN {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	if len(l.segs) == 0 {
		return 0
	}
	return l.segs[0].base
}

// Err returns nil, or the failure (wrapping ErrFailed and the cause) once a
// write or sync failed and the log stopped.
func (l *Log) Err() error {
	if p := l.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// RemoveBefore retires every complete segment whose records all lie before
// lsn: up to a few files are kept (renamed) for recycling, the rest are
// deleted, and the directory is synced. The active segment is never
// removed. The caller must not have a Reader positioned in a retired
// segment.
func (l *Log) RemoveBefore(lsn LSN) error {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	changed := false
	for len(l.segs) > 1 && l.segs[0].ended && l.segs[0].end <= lsn {
		s := l.segs[0]
		p := l.path(segmentName(s.num))
		if len(l.pool) < recycleLimit {
			rp := l.path(recycleName(s.num))
			if err := l.fs.Rename(p, rp); err != nil {
				return fmt.Errorf("wal: retire %s: %w", p, err)
			}
			l.pool = append(l.pool, rp)
		} else if err := l.fs.Remove(p); err != nil {
			return fmt.Errorf("wal: remove %s: %w", p, err)
		}
		l.segs = l.segs[1:]
		changed = true
	}
	if changed {
		if err := l.dirFile.Sync(); err != nil {
			return fmt.Errorf("wal: sync directory %s: %w", l.opts.Dir, err)
		}
	}
	return nil
}

// Close stops accepting appends, waits until the flusher has written and
// synced everything appended before, and closes the files. It returns the
// failure if the log failed, ErrClosed if already closed.
func (l *Log) Close() error {
	if l.opts.Manual {
		_ = l.Flush() // no flusher does it
	}
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.closed = true
	l.mu.closing = true
	l.mu.space.Broadcast()
	l.mu.Unlock()
	close(l.closeCh)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.done
	err := l.Err()
	if l.w.f != nil {
		if cerr := l.w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("wal: close segment: %w", cerr)
		}
	}
	if cerr := l.dirFile.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: close directory: %w", cerr)
	}
	return err
}
