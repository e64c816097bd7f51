package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
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

// recover validates the segments on disk and fills l.segs and l.pool. It
// returns the number for the next segment, the recovered end and the bytes
// of a torn tail. It reads everything and decides before it changes
// anything on disk: a log it refuses is left as it was.
//
// The rule that tells a torn tail from corruption: every frame carries a
// synced field, the durable end of the log when it was appended, and every
// segment header carries its base, which the previous segment had been
// synced through before the header was written. Bytes below any such claim
// were durable, so an invalid frame there is corruption. Concretely:
//   - a segment that is not the last must hold valid frames from its base
//     exactly up to the next segment's base;
//   - in the last segment, the first invalid frame at LSN p ends the log,
//     unless a valid frame later in the segment (found by trying every
//     8-byte-aligned position whose LSN field matches) claims synced > p;
//   - trailing segments whose header is invalid were being set up when the
//     process stopped and are recycled; an invalid header before a valid
//     one is corruption.
//
// Two more rules catch a log that was shortened (a file cut or truncated
// by hand, not by a crash), which no frame can reveal because the frames
// that would claim the lost range are gone:
//   - a segment's header (format version 2) records the size the file was
//     preallocated to, and is synced with that size before any frame is
//     written, so a crash never leaves a started segment shorter than that;
//     a shorter file has lost its end;
//   - Options.KnownDurable (the engine's checkpoint position) must not lie
//     beyond the recovered end.
//
// Either is refused, naming the segment and the missing range, unless
// Options.AcceptLoss is set.
func (l *Log) recover() (nextNum uint64, end LSN, tornBytes int64, err error) {
	names, err := l.fs.List(l.opts.Dir)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wal: list %s: %w", l.opts.Dir, err)
	}
	var nums []uint64
	var maxNum uint64
	var recycled []string
	for _, name := range names {
		num, isRecycled, ok := parseName(name)
		if !ok {
			continue
		}
		if isRecycled {
			recycled = append(recycled, l.path(name))
			continue
		}
		nums = append(nums, num)
		maxNum = max(maxNum, num)
	}
	slices.Sort(nums)
	slices.Sort(recycled)

	hdrs := make([]segmentHeader, len(nums))
	lastValid := -1
	var buf [segmentHeaderSize]byte
	for i, num := range nums {
		hdrs[i].num = num
		if err := l.readAll(segmentName(num), buf[:], 0); err != nil {
			hdrs[i].err = err
			if !errors.Is(err, errShortFrame) {
				return 0, 0, 0, err
			}
			continue
		}
		hdrs[i], hdrs[i].err = decodeSegmentHeader(buf[:], num)
		if hdrs[i].err == nil {
			lastValid = i
		}
	}
	for i := 0; i < lastValid; i++ {
		if h := hdrs[i]; h.err != nil {
			return 0, 0, 0, fmt.Errorf("%w: segment %s offset 0: %v", ErrCorrupt, l.path(segmentName(h.num)), h.err)
		}
	}
	nextNum, end = maxNum+1, 0
	if lastValid >= 0 {
		if end, tornBytes, err = l.scanSegments(hdrs[:lastValid+1]); err != nil {
			return 0, 0, 0, err
		}
		nextNum = l.segs[len(l.segs)-1].num + 1
	}
	if kd := l.opts.KnownDurable; kd > end {
		err := fmt.Errorf("%w: the log ends at LSN %d but LSN %d was durable (%s): the records in [%d, %d) are missing; restore the log directory whole, or accept the loss",
			ErrLost, end, kd, l.opts.KnownDurableWhy, end, kd)
		if !l.opts.AcceptLoss {
			return 0, 0, 0, err
		}
		l.opts.Logger.Error("wal: accepting the loss of acknowledged records", "err", err)
	}
	// Decided: now change the directory. Unstarted segments (invalid
	// headers after the last valid one) are kept for reuse.
	l.pool = recycled
	renamed := false
	for _, h := range hdrs[lastValid+1:] {
		p := l.path(recycleName(h.num))
		if err := l.fs.Rename(l.path(segmentName(h.num)), p); err != nil {
			return 0, 0, 0, fmt.Errorf("wal: recycle unstarted segment: %w", err)
		}
		l.pool = append(l.pool, p)
		renamed = true
	}
	for len(l.pool) > recycleLimit {
		if err := l.fs.Remove(l.pool[0]); err != nil {
			return 0, 0, 0, fmt.Errorf("wal: remove %s: %w", l.pool[0], err)
		}
		l.pool = l.pool[1:]
		renamed = true
	}
	if renamed {
		if err := l.dirFile.Sync(); err != nil {
			return 0, 0, 0, fmt.Errorf("wal: sync directory %s: %w", l.opts.Dir, err)
		}
	}
	return nextNum, end, tornBytes, nil
}

// scanSegments checks the started segments (read only) and fills l.segs.
func (l *Log) scanSegments(hdrs []segmentHeader) (end LSN, tornBytes int64, err error) {
	for i, h := range hdrs {
		if i > 0 {
			prev := hdrs[i-1]
			if h.num != prev.num+1 {
				return 0, 0, fmt.Errorf("%w: segment %s missing (between %s and %s)", ErrCorrupt,
					l.path(segmentName(prev.num+1)), segmentName(prev.num), segmentName(h.num))
			}
			if h.base < prev.base {
				return 0, 0, fmt.Errorf("%w: segment %s offset 0: base LSN %d precedes the previous segment's %d",
					ErrCorrupt, l.path(segmentName(h.num)), h.base, prev.base)
			}
		}
		l.segs = append(l.segs, segment{num: h.num, base: h.base})
	}
	var sc scanner
	for i := range l.segs {
		s := &l.segs[i]
		last := i == len(l.segs)-1
		p := l.path(segmentName(s.num))
		f, err := l.fs.Open(p)
		if err != nil {
			return 0, 0, fmt.Errorf("wal: open %s: %w", p, err)
		}
		var next LSN
		if !last {
			next = l.segs[i+1].base
		}
		end, tornBytes, err = l.scanSegment(&sc, f, p, s, hdrs[i].size, next, last)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("wal: close %s: %w", p, cerr)
		}
		if err != nil {
			return 0, 0, err
		}
	}
	return end, tornBytes, nil
}

// scanSegment checks one segment and returns the LSN its records end at. The
// last segment ends at its first invalid frame; the bytes after it are a
// torn tail (reported) or leftovers of the file's earlier life (not
// reported). They are left in place: appends continue in a new segment, and
// a segment that is not the last is only ever read up to the next one's
// base.
func (l *Log) scanSegment(sc *scanner, f vfs.File, p string, s *segment, prealloc int64, next LSN, last bool) (end LSN, tornBytes int64, err error) {
	if err := sc.reset(f, p, s.base); err != nil {
		return 0, 0, fmt.Errorf("wal: stat %s: %w", p, err)
	}
	if !last {
		at, stopErr, err := sc.scanEnd(s.base, next, true)
		if err != nil {
			return 0, 0, err
		}
		if stopErr != nil {
			return 0, 0, sc.corruptError(at, fmt.Errorf("%v (the next segment starts at LSN %d, so this data was durable)", stopErr, next))
		}
		s.end, s.ended = next, true
		return next, 0, nil
	}
	at, stopErr, err := sc.scanEnd(s.base, 0, false)
	if err != nil {
		return 0, 0, err
	}
	if stopErr != nil {
		q, found, err := sc.findClaim(at)
		if err != nil {
			return 0, 0, err
		}
		if found {
			return 0, 0, sc.corruptError(at, fmt.Errorf("%v, but the valid record at LSN %d says the log was durable beyond it", stopErr, q))
		}
	}
	if prealloc > 0 && sc.size < prealloc {
		err := fmt.Errorf("%w: segment %s is %d bytes but was preallocated to %d: it was cut after it was written (a crash never shortens it); the records from LSN %d (file offset %d) on may be lost; restore the file, or accept the loss",
			ErrLost, p, sc.size, prealloc, at, fileOffset(s.base, at))
		if !l.opts.AcceptLoss {
			return 0, 0, err
		}
		l.opts.Logger.Error("wal: accepting the loss of acknowledged records", "err", err)
	}
	tornBytes, err = sc.tornTail(at)
	if err != nil {
		return 0, 0, err
	}
	if tornBytes > 0 {
		l.opts.Logger.Warn("wal: torn tail dropped (the last group commit was cut by a crash before its sync)",
			"segment", p, "offset", fileOffset(s.base, at), "lsn", at, "bytes", tornBytes)
	}
	s.end, s.ended = at, true
	return at, tornBytes, nil
}

// readAll reads len(b) bytes at off from the named file; errShortFrame if
// the file is shorter.
func (l *Log) readAll(name string, b []byte, off int64) error {
	p := l.path(name)
	f, err := l.fs.Open(p)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", p, err)
	}
	defer f.Close()
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return errShortFrame
	}
	return fmt.Errorf("wal: read %s: %w", p, err)
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

// flushLoop is the single flusher goroutine. Each round it takes the whole
// pending buffer (appenders continue into the spare one), writes it with one
// write per segment it touches, syncs once per segment, then publishes the
// new durable end and wakes every waiter at once with one broadcast.
//
// Ordering argument: the end published after a round is the mu.end read
// when the buffer was taken, so it never covers bytes of a later round.
// DurableLSN is stored, and the broadcast made, while holding waitMu; a
// waiter checks DurableLSN and goes to sleep under waitMu, so it either sees
// the new value or is asleep before the broadcast. (A channel per round
// was tried first; it allocates once per round, which this design avoids.) A segment is synced before the next segment's
// header is written, which is what the recovery rule relies on.
func (l *Log) flushLoop() {
	defer close(l.done)
	var timer *time.Timer
	if l.opts.MaxBatchDelay > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
	}
	for {
		l.mu.Lock()
		for len(l.mu.buf) == 0 {
			if l.mu.closing {
				l.mu.Unlock()
				l.stop()
				return
			}
			l.mu.Unlock()
			<-l.wake
			l.mu.Lock()
		}
		if timer != nil && !l.mu.closing && len(l.mu.buf) < l.opts.BufferSize/2 {
			l.mu.Unlock()
			timer.Reset(l.opts.MaxBatchDelay)
			select {
			case <-timer.C:
			case <-l.full:
			case <-l.closeCh:
			}
			timer.Stop()
			l.mu.Lock()
		}
		if err := l.flushLocked(); err != nil {
			l.stop()
			return
		}
		// Let the appenders just woken by publish run before the next
		// batch is taken: with few cores they otherwise miss it and the
		// next sync carries only a few records.
		runtime.Gosched()
	}
}

// flushLocked is one round of the flusher, entered with l.mu held (and
// left with it released): take the whole pending buffer (appenders continue
// into the spare one), write it, sync, check the files are still linked,
// and publish the new durable end. An error fails the log for good.
func (l *Log) flushLocked() error {
	buf, cuts, end := l.mu.buf, l.mu.cuts, l.mu.end
	l.mu.buf, l.mu.cuts = l.w.spare[:0], l.w.cuts[:0]
	l.mu.space.Broadcast()
	l.mu.Unlock()

	l.w.syncTime = 0
	n := len(buf)
	err := l.writeBuf(buf, cuts)
	if err == nil && l.opts.OnFlush != nil {
		l.opts.OnFlush(n, l.w.syncTime)
	}
	if cap(buf) <= 4*l.opts.BufferSize { // drop an outsized buffer
		l.w.spare = buf[:0]
	} else {
		l.w.spare = nil
	}
	l.w.cuts = cuts[:0]
	if err == nil {
		err = l.checkLinked()
	}
	if err != nil {
		l.fail(err)
		return err
	}
	l.publish(end)
	return nil
}

// Flush writes and syncs what has been appended, on the caller's goroutine.
// Only for a Log opened with Options.Manual (the engine's simulator), where
// no flusher goroutine runs; it returns the log's failure, if any.
func (l *Log) Flush() error {
	if !l.opts.Manual {
		return errors.New("wal: Flush is only for a log opened with Options.Manual")
	}
	if err := l.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	if len(l.mu.buf) == 0 {
		l.mu.Unlock()
		return nil
	}
	return l.flushLocked()
}

func (l *Log) publish(end LSN) {
	l.waitMu.Lock()
	l.durable.Store(uint64(end))
	l.waitCond.Broadcast()
	l.waitMu.Unlock()
	if l.opts.OnDurable != nil {
		l.opts.OnDurable(end)
	}
}

// stop marks the flusher as gone and wakes every waiter for good.
func (l *Log) stop() {
	l.waitMu.Lock()
	l.stopped.Store(true)
	l.waitCond.Broadcast()
	l.waitMu.Unlock()
}

func (l *Log) fail(cause error) {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	l.failErr.Store(&err)
	l.opts.Logger.Error("wal: write or sync failed; log stopped", "dir", l.opts.Dir,
		"durable", l.DurableLSN(), "err", cause)
	l.mu.Lock()
	l.mu.failed = err
	l.mu.space.Broadcast()
	l.mu.Unlock()
}

// checkLinked fails if the active segment or the log's directory was
// removed while open: the data just synced would not be found after a
// restart, so it must not be reported durable. Two fstat calls per batch.
func (l *Log) checkLinked() error {
	gone, err := vfs.IsUnlinked(l.w.f)
	if err == nil && !gone {
		gone, err = vfs.IsUnlinked(l.dirFile)
	}
	if err != nil {
		return fmt.Errorf("wal: check %s: %w", l.opts.Dir, err)
	}
	if gone {
		return fmt.Errorf("wal: the log directory %s or its active segment was removed while open: nothing written since is durable", l.opts.Dir)
	}
	return nil
}

// writeBuf writes one taken buffer: a write per segment range, a sync of
// each segment before the next is started, and a final sync.
func (l *Log) writeBuf(buf []byte, cuts []cut) error {
	start := 0
	for _, c := range cuts {
		if err := l.writeRange(buf[start:c.off]); err != nil {
			return err
		}
		if l.w.next != c.base {
			panic(fmt.Sprintf("wal: segment cut at LSN %d but writer is at %d", c.base, l.w.next))
		}
		if err := l.syncActive(); err != nil {
			return err
		}
		if err := l.rollover(c.num, c.base); err != nil {
			return err
		}
		start = c.off
	}
	if err := l.writeRange(buf[start:]); err != nil {
		return err
	}
	return l.syncActive()
}

func (l *Log) writeRange(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	off := fileOffset(l.w.base, l.w.next)
	if _, err := l.w.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("wal: write %s at %d: %w", l.path(segmentName(l.w.num)), off, err)
	}
	l.w.next += LSN(len(b))
	l.w.dirty = true
	return nil
}

func (l *Log) syncActive() error {
	if !l.w.dirty {
		return nil
	}
	t0 := time.Now()
	if err := l.w.f.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", l.path(segmentName(l.w.num)), err)
	}
	l.w.syncTime += time.Since(t0)
	l.w.dirty = false
	return nil
}

// rollover makes segment num, starting at base, the active one: it reuses
// a recycled file (or creates one), preallocates it, syncs the directory and
// writes the header (made durable by the next sync). The previous segment
// must already be synced.
func (l *Log) rollover(num uint64, base LSN) error {
	p := l.path(segmentName(num))
	l.segMu.Lock()
	var from string
	if n := len(l.pool); n > 0 {
		from = l.pool[n-1]
		l.pool = l.pool[:n-1]
	}
	l.segMu.Unlock()
	var f vfs.File
	var err error
	if from != "" {
		if err = l.fs.Rename(from, p); err != nil {
			return fmt.Errorf("wal: recycle %s as %s: %w", from, p, err)
		}
		f, err = l.fs.OpenReadWrite(p)
	} else {
		f, err = l.fs.Create(p)
	}
	if err != nil {
		return fmt.Errorf("wal: create %s: %w", p, err)
	}
	if err := f.Preallocate(0, l.opts.SegmentSize); err != nil {
		f.Close()
		return fmt.Errorf("wal: preallocate %s: %w", p, err)
	}
	if err := l.dirFile.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("wal: sync directory %s: %w", l.opts.Dir, err)
	}
	encodeSegmentHeader(l.w.hdr[:], num, base, l.opts.SegmentSize)
	if _, err := f.WriteAt(l.w.hdr[:], 0); err != nil {
		f.Close()
		return fmt.Errorf("wal: write header of %s: %w", p, err)
	}
	// The header and the preallocated size are durable before any frame
	// is written: recovery may then take a file shorter than its header
	// says for one that was cut, never for a crash.
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("wal: sync %s: %w", p, err)
	}
	if l.w.f != nil {
		if err := l.w.f.Close(); err != nil {
			f.Close()
			return fmt.Errorf("wal: close %s: %w", l.path(segmentName(l.w.num)), err)
		}
	}
	l.w.f, l.w.num, l.w.base, l.w.dirty = f, num, base, true
	l.segMu.Lock()
	if n := len(l.segs); n > 0 {
		l.segs[n-1].end, l.segs[n-1].ended = base, true
	}
	l.segs = append(l.segs, segment{num: num, base: base})
	l.segMu.Unlock()
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
