package wal

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/shardfn/shardfn/wal/vfs"
)

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
