package wal

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/shardfn/shardfn/wal/vfs"
)

// snapshot is every file of a MemFS with its content.
func snapshot(t *testing.T, fs *vfs.MemFS) map[string][]byte {
	t.Helper()
	names, err := fs.List(testDir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, n := range names {
		b, err := fs.ReadFile(testDir + "/" + n)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = b
	}
	return m
}

func sameFiles(t *testing.T, a, b map[string][]byte) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("the directory changed: %d files, then %d", len(a), len(b))
	}
	for n, d := range a {
		if !bytes.Equal(d, b[n]) {
			t.Fatalf("%s changed", n)
		}
	}
}

// Bug 10 of the review: a shortened log silently lost acknowledged
// records; only a few "torn" bytes were reported. A segment shorter than it
// was preallocated to was cut after it was written; Open refuses it,
// naming the segment and where the loss starts, and changes nothing.
func TestShortenedSegmentIsRefused(t *testing.T) {
	fs := vfs.NewMemFS()
	recs := writeLog(t, fs, 8192, 40)
	segs := segPaths(t, fs)
	last := segs[len(segs)-1]
	data, _ := fs.ReadFile(last)
	cut := 32 + 700 // in the middle of the segment's records
	f, err := fs.OpenReadWrite(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(cut)); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	before := snapshot(t, fs)
	_, err = Open(memOptions(fs, 8192))
	if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), last) {
		t.Fatalf("Open of a shortened log: %v; want ErrLost naming %s", err, last)
	}
	sameFiles(t, before, snapshot(t, fs))
	// Accepting the loss opens what is left.
	o := memOptions(fs, 8192)
	o.AcceptLoss = true
	l, err := Open(o)
	if err != nil {
		t.Fatalf("Open with AcceptLoss: %v", err)
	}
	got := readAllRecords(t, l)
	if len(got) == 0 || len(got) >= len(recs) {
		t.Fatalf("recovered %d of %d records", len(got), len(recs))
	}
	equalRecs(t, got, recs[:len(got)])
	l.Close()
	_ = data
}

// A log that ends before a position known to be durable (the engine's
// checkpoint) is refused before anything on disk changes.
func TestLogBeforeKnownDurableIsRefused(t *testing.T) {
	fs := vfs.NewMemFS()
	recs := writeLog(t, fs, 8192, 10)
	end := recs[len(recs)-1].lsn + LSN(frameSize(len(recs[len(recs)-1].data)))
	before := snapshot(t, fs)
	o := memOptions(fs, 8192)
	o.KnownDurable = end + 4096
	o.KnownDurableWhy = "the checkpoint"
	_, err := Open(o)
	if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "the checkpoint") {
		t.Fatalf("Open: %v; want ErrLost", err)
	}
	sameFiles(t, before, snapshot(t, fs))
	o.KnownDurable = end
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	equalRecs(t, readAllRecords(t, l), recs)
	l.Close()
}

// warnings collects the log's warning and error lines.
type warnings struct {
	mu    sync.Mutex
	lines []string
}

func (w *warnings) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	w.lines = append(w.lines, r.Message)
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// Bug 10, the other way round: reopening after a clean close reported a
// torn tail (the leftovers of a recycled segment after the log's end).
func TestCleanReopenReportsNoTornTail(t *testing.T) {
	fs := vfs.NewMemFS()
	w := &warnings{}
	o := memOptions(fs, 2048)
	o.Logger = slog.New(w)
	l := mustOpen(t, o)
	var end LSN
	for i := 0; i < 200; i++ {
		_, end = appendOne(t, l, payload(i))
		if i%20 == 19 {
			if err := l.RemoveBefore(end); err != nil { // segments go to the recycle pool and come back
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		l := mustOpen(t, o)
		appendOne(t, l, "one more")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.lines) > 0 {
		t.Fatalf("a clean reopen warned: %q", w.lines)
	}
	// A real torn tail is still reported: tear the last record.
	l = mustOpen(t, o)
	lsn, _ := appendOne(t, l, strings.Repeat("x", 300))
	l.Close()
	segs := segPaths(t, fs)
	last := segs[len(segs)-1]
	b, _ := fs.ReadFile(last)
	h, err := decodeSegmentHeader(b, parseNum(t, last))
	if err != nil {
		t.Fatal(err)
	}
	off := fileOffset(h.base, lsn) + 100
	clear(b[off : off+8])
	fs.WriteFile(last, b)
	l = mustOpen(t, o)
	l.Close()
	if len(w.lines) != 1 || !strings.Contains(w.lines[0], "torn tail") {
		t.Fatalf("a torn tail was not reported: %q", w.lines)
	}
}

func parseNum(t *testing.T, p string) uint64 {
	n, _, ok := parseName(p[strings.LastIndexByte(p, '/')+1:])
	if !ok {
		t.Fatalf("not a segment: %s", p)
	}
	return n
}
