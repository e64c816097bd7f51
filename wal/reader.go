package wal

import (
	"errors"
	"fmt"
	"io"

	"github.com/shardfn/shardfn/wal/vfs"
)

// Reader iterates over the records of a Log from a given LSN up to the
// durable end, which it re-reads when it gets there (so a Reader also sees
// records made durable after it was created). A Reader belongs to one
// goroutine; it may be used concurrently with Append on its Log. The caller
// must not RemoveBefore past a Reader's position while using it.
type Reader struct {
	l     *Log
	pos   LSN
	limit LSN
	seg   segment
	open  bool // f and sc hold seg
	f     vfs.File
	sc    scanner
	err   error
}

// NewReader returns a Reader positioned at from, which must be a record
// boundary (an LSN returned by Append or a Reader, or an end position) within
// [FirstLSN(), DurableLSN()].
func (l *Log) NewReader(from LSN) (*Reader, error) {
	first, durable := l.FirstLSN(), l.DurableLSN()
	if from < first {
		return nil, fmt.Errorf("wal: reader start LSN %d precedes the first retained LSN %d", from, first)
	}
	if from > durable {
		return nil, fmt.Errorf("wal: reader start LSN %d is beyond the durable end %d", from, durable)
	}
	r := &Reader{l: l, pos: from, limit: from}
	if from < durable {
		r.limit = durable
		if err := r.openSegment(); err != nil {
			r.Close()
			return nil, err
		}
		if _, _, _, err := r.sc.frame(from); err != nil {
			r.Close()
			if errors.Is(err, errBadFrame) || errors.Is(err, errShortFrame) {
				return nil, fmt.Errorf("wal: reader start LSN %d is not a record boundary: %v", from, err)
			}
			return nil, err
		}
	}
	return r, nil
}

// Next returns the next record and its LSN, or io.EOF at the durable end.
// rec is valid until the next call. A record that fails its checksum yields
// an error wrapping ErrCorrupt; errors are sticky.
func (r *Reader) Next() (lsn LSN, rec []byte, err error) {
	if r.err != nil {
		return 0, nil, r.err
	}
	if r.pos >= r.limit {
		// Bytes of the active segment beyond the old limit may have been
		// buffered before they were written.
		if r.open && !r.seg.ended {
			r.sc.dropFrom(fileOffset(r.seg.base, r.limit))
		}
		r.limit = r.l.DurableLSN()
		if r.open && !r.seg.ended {
			// Read after the durable end: a rollover that made data
			// durable beyond this segment has set its end by now. The
			// segment may even be retired already (a checkpoint at the
			// reader's position, which is its end): then reopen at pos.
			if s, live := r.l.segmentByNum(r.seg.num); live {
				r.seg = s
			} else {
				r.f.Close()
				r.f, r.open = nil, false
			}
		}
		if r.pos >= r.limit {
			return 0, nil, io.EOF
		}
	}
	if !r.open || (r.seg.ended && r.pos >= r.seg.end) {
		if err := r.openSegment(); err != nil {
			r.err = err
			return 0, nil, err
		}
	}
	payload, _, size, err := r.sc.frame(r.pos)
	if errors.Is(err, errShortFrame) && !r.seg.ended {
		// The active segment may have grown since its size was read.
		if err = r.sc.refreshSize(); err == nil {
			r.sc.dropFrom(fileOffset(r.seg.base, r.pos))
			payload, _, size, err = r.sc.frame(r.pos)
		}
	}
	if err != nil {
		if errors.Is(err, errBadFrame) || errors.Is(err, errShortFrame) {
			err = r.sc.corruptError(r.pos, err)
		}
		r.err = err
		return 0, nil, err
	}
	lsn = r.pos
	r.pos += LSN(size)
	return lsn, payload, nil
}

// Pos is the reader's position: the LSN after the last record Next
// returned (its end), where the next record starts.
func (r *Reader) Pos() LSN { return r.pos }

// openSegment opens the segment holding r.pos.
func (r *Reader) openSegment() error {
	s, ok := r.l.segmentFor(r.pos)
	if !ok {
		return fmt.Errorf("wal: no segment holds LSN %d", r.pos)
	}
	if r.f != nil {
		r.f.Close()
		r.f = nil
		r.open = false
	}
	p := r.l.path(segmentName(s.num))
	f, err := r.l.fs.Open(p)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", p, err)
	}
	if err := r.sc.reset(f, p, s.base); err != nil {
		f.Close()
		return fmt.Errorf("wal: stat %s: %w", p, err)
	}
	r.f, r.seg, r.open = f, s, true
	return nil
}

// Close releases the Reader's file. It is safe to call more than once.
func (r *Reader) Close() error {
	r.err = ErrClosed
	if r.f == nil {
		return nil
	}
	f := r.f
	r.f, r.open = nil, false
	return f.Close()
}

// segmentByNum returns the live segment numbered num, if it is still live.
func (l *Log) segmentByNum(num uint64) (segment, bool) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	for _, s := range l.segs {
		if s.num == num {
			return s, true
		}
	}
	return segment{}, false
}

// segmentFor returns the live segment that holds lsn (for lsn equal to a
// segment's end, the following segment).
func (l *Log) segmentFor(lsn LSN) (segment, bool) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	for _, s := range l.segs {
		if lsn >= s.base && (!s.ended || lsn < s.end) {
			return s, true
		}
	}
	return segment{}, false
}
