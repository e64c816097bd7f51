package wal

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/shardfn/shardfn/wal/vfs"
)

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
