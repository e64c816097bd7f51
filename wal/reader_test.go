package wal

import (
	"errors"
	"io"
	"testing"

	"github.com/shardfn/shardfn/wal/vfs"
)

// Bug 6 of the review: a reader positioned at the exact end of the active
// segment (a checkpoint there) read on into the retired file after the next
// rollover and RemoveBefore of its own position, and failed with a spurious
// "corrupt log" (LSN field 0).
func TestReaderAtSegmentEndSurvivesRetirement(t *testing.T) {
	for _, recycle := range []bool{true, false} {
		fs := vfs.NewMemFS()
		l := mustOpen(t, memOptions(fs, 1024))
		r, err := l.NewReader(l.FirstLSN())
		if err != nil {
			t.Fatal(err)
		}
		// Fill the first segment exactly: 1024 - 32 header = 992 bytes of
		// frames; a frame of n payload bytes takes 24+n padded to 8.
		var b Batch
		for i := 0; i < 4; i++ {
			b.Add(make([]byte, 224)) // 248-byte frames: 4 × 248 = 992
		}
		end, err := l.Append(&b)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitDurable(end); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			if _, _, err := r.Next(); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("at the segment end: %v", err)
		}
		// The next record goes to a new segment; a checkpoint at the
		// reader's position retires the full one.
		_, end2 := appendOne(t, l, "after the boundary")
		if !recycle {
			// Several retirements in a row: the pool is full and the
			// file is deleted rather than kept.
			l.segMu.Lock()
			l.pool = append(l.pool, "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8")[:recycleLimit]
			l.segMu.Unlock()
		}
		if err := l.RemoveBefore(end); err != nil {
			t.Fatal(err)
		}
		// Another append may reuse the retired file as a new segment.
		for i := 0; i < 8; i++ {
			_, end2 = appendOne(t, l, payload(i))
		}
		n := 0
		for {
			lsn, rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("recycle=%v: reading after the retired segment: %v", recycle, err)
			}
			if n == 0 && (lsn != end || string(rec) != "after the boundary") {
				t.Fatalf("first record after the boundary: lsn %d (want %d) %q", lsn, end, rec)
			}
			n++
		}
		if n != 9 || r.Pos() != end2 {
			t.Fatalf("read %d records to %d, want 9 to %d", n, r.Pos(), end2)
		}
		r.Close()
		if !recycle {
			l.segMu.Lock()
			l.pool = nil
			l.segMu.Unlock()
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
