package wal

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"

	"github.com/shardfn/shardfn/wal/vfs"
)

// writeLog opens a MemFS log, appends n records (each synced on its own, so
// every frame claims the previous ones durable), closes it and returns the
// records.
func writeLog(t *testing.T, fs *vfs.MemFS, segSize int64, n int) []rec {
	t.Helper()
	l := mustOpen(t, memOptions(fs, segSize))
	var recs []rec
	for i := range n {
		lsn, _ := appendOne(t, l, payload(i))
		recs = append(recs, rec{lsn, payload(i)})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return recs
}

func segPaths(t *testing.T, fs *vfs.MemFS) []string {
	t.Helper()
	names, err := fs.List(testDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if _, recycled, ok := parseName(n); ok && !recycled {
			out = append(out, path.Join(testDir, n))
		}
	}
	return out
}

func equalRecs(t *testing.T, got, want []rec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("record %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestTornTailEveryOffset tears the last segment at every byte offset inside
// its last record (the bytes after the tear are what the preallocated file
// held: zeros; a crash never shortens the file): recovery must yield all
// records but the last, and the log must then accept appends that survive
// another reopen.
func TestTornTailEveryOffset(t *testing.T) {
	base := vfs.NewMemFS()
	recs := writeLog(t, base, 4096, 5)
	segs := segPaths(t, base)
	last := segs[len(segs)-1]
	data, err := base.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	lastRec := recs[len(recs)-1]
	start := fileOffset(0, lastRec.lsn) // one segment, base 0
	end := start + int64(frameSize(len(lastRec.data)))
	for off := start; off < end; off++ {
		fs := vfs.NewMemFS()
		writeLog(t, fs, 4096, 0) // creates the directory
		for _, p := range segPaths(t, fs) {
			if err := fs.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		f, err := fs.Create(last)
		if err != nil {
			t.Fatal(err)
		}
		torn := append(append([]byte(nil), data[:off]...), make([]byte, len(data)-int(off))...)
		f.WriteAt(torn, 0)
		f.Sync()
		f.Close()
		l, err := Open(memOptions(fs, 4096))
		if err != nil {
			t.Fatalf("cut at %d: Open: %v", off, err)
		}
		equalRecs(t, readAllRecords(t, l), recs[:len(recs)-1])
		lsn, _ := appendOne(t, l, "after")
		if lsn != lastRec.lsn {
			t.Fatalf("cut at %d: new record at LSN %d, want %d", off, lsn, lastRec.lsn)
		}
		l.Close()
		l = mustOpen(t, memOptions(fs, 4096))
		equalRecs(t, readAllRecords(t, l), append(recs[:len(recs)-1:len(recs)-1], rec{lsn, "after"}))
		l.Close()
	}
}

// corruptCase builds a log, damages it and says what Open must do.
type corruptCase struct {
	name    string
	segSize int64
	n       int
	damage  func(t *testing.T, fs *vfs.MemFS, recs []rec)
	// wantErr: Open must fail with ErrCorrupt naming wantFile at wantOff.
	wantErr  bool
	wantFile func(fs *vfs.MemFS) string
	wantOff  func(recs []rec) int64
	// otherwise Open must recover exactly the first keep records.
	keep int
}

func flipByte(t *testing.T, fs *vfs.MemFS, p string, off int64) {
	t.Helper()
	b, err := fs.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := fs.WriteFile(p, b); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionVersusTornTail(t *testing.T) {
	for _, c := range corruptCases(t) {
		t.Run(c.name, func(t *testing.T) { runCorruptCase(t, c) })
	}
}

// corruptCases: damage that recovery must refuse (naming the file and
// offset) or take as a torn tail (keeping the first records).
func corruptCases(t *testing.T) []corruptCase {
	lastSeg := func(fs *vfs.MemFS) string { s := segPaths(t, fs); return s[len(s)-1] }
	firstSeg := func(fs *vfs.MemFS) string { return segPaths(t, fs)[0] }
	return []corruptCase{
		{
			name: "bad CRC followed by valid records", segSize: 1 << 16, n: 10,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				flipByte(t, fs, lastSeg(fs), fileOffset(0, recs[3].lsn)+frameHeaderSize+2)
			},
			wantErr: true, wantFile: lastSeg,
			wantOff: func(recs []rec) int64 { return fileOffset(0, recs[3].lsn) },
		},
		{
			name: "bad length field followed by valid records", segSize: 1 << 16, n: 10,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				flipByte(t, fs, lastSeg(fs), fileOffset(0, recs[6].lsn)+5)
			},
			wantErr: true, wantFile: lastSeg,
			wantOff: func(recs []rec) int64 { return fileOffset(0, recs[6].lsn) },
		},
		{
			name: "damaged last record is a torn tail", segSize: 1 << 16, n: 10,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				flipByte(t, fs, lastSeg(fs), fileOffset(0, recs[9].lsn)+frameHeaderSize)
			},
			keep: 9,
		},
		{
			name: "corruption in a non-last segment", segSize: 1024, n: 40,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				flipByte(t, fs, firstSeg(fs), segmentHeaderSize+frameHeaderSize+1)
			},
			wantErr: true, wantFile: firstSeg,
			wantOff: func([]rec) int64 { return segmentHeaderSize },
		},
		{
			name: "last record of a non-last segment", segSize: 1024, n: 40,
			damage:  damageLastOfFirstSegment,
			wantErr: true, wantFile: firstSeg,
			wantOff: func(recs []rec) int64 { return -1 },
		},
		{
			name: "bad header of a non-last segment", segSize: 1024, n: 40,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				flipByte(t, fs, firstSeg(fs), 20)
			},
			wantErr: true, wantFile: firstSeg,
			wantOff: func([]rec) int64 { return 0 },
		},
		{
			name: "missing middle segment", segSize: 1024, n: 40,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				if err := fs.Remove(segPaths(t, fs)[1]); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: true, wantFile: func(*vfs.MemFS) string { return path.Join(testDir, segmentName(2)) },
			wantOff: func([]rec) int64 { return -1 },
		},
		{
			name: "garbage after the end that claims nothing", segSize: 1 << 16, n: 10,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) { appendUnsyncedGarbage(fs, lastSeg(fs), recs[9]) },
			keep:   10,
		},
		{
			name: "unstarted trailing segment", segSize: 1 << 16, n: 3,
			damage: func(t *testing.T, fs *vfs.MemFS, recs []rec) {
				f, _ := fs.Create(path.Join(testDir, segmentName(2)))
				f.WriteAt([]byte("not a header at all, just junk bytes"), 0)
				f.Sync()
				f.Close()
				d, _ := fs.OpenDir(testDir)
				d.Sync()
			},
			keep: 3,
		},
	}
}

func runCorruptCase(t *testing.T, c corruptCase) {
	fs := vfs.NewMemFS()
	recs := writeLog(t, fs, c.segSize, c.n)
	c.damage(t, fs, recs)
	l, err := Open(memOptions(fs, c.segSize))
	if !c.wantErr {
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		equalRecs(t, readAllRecords(t, l), recs[:c.keep])
		l.Close()
		return
	}
	if err == nil {
		l.Close()
		t.Fatal("Open succeeded on a corrupt log")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %v does not wrap ErrCorrupt", err)
	}
	if f := c.wantFile(fs); !strings.Contains(err.Error(), f) {
		t.Fatalf("error %q does not name %s", err, f)
	}
	if off := c.wantOff(recs); off >= 0 && !strings.Contains(err.Error(), fmt.Sprintf("offset %d ", off)) &&
		!strings.Contains(err.Error(), fmt.Sprintf("offset %d:", off)) {
		t.Fatalf("error %q does not name offset %d", err, off)
	}
}

// damageLastOfFirstSegment damages the first segment's last record, which
// ends at the second segment's base.
func damageLastOfFirstSegment(t *testing.T, fs *vfs.MemFS, recs []rec) {
	b, _ := fs.ReadFile(segPaths(t, fs)[1])
	h, err := decodeSegmentHeader(b, 2)
	if err != nil {
		t.Fatal(err)
	}
	var lastLSN LSN
	for _, r := range recs {
		if r.lsn < h.base {
			lastLSN = r.lsn
		}
	}
	flipByte(t, fs, segPaths(t, fs)[0], fileOffset(0, lastLSN)+frameHeaderSize)
}

// appendUnsyncedGarbage writes torn bytes after the last record, then a
// valid-looking frame at its own LSN whose synced claim is the end: as
// written by an unsynced batch. It claims nothing below the end.
func appendUnsyncedGarbage(fs *vfs.MemFS, p string, last rec) {
	b, _ := fs.ReadFile(p)
	endLSN := last.lsn + LSN(frameSize(len(last.data)))
	end := fileOffset(0, endLSN)
	f := buildFrame([]byte("unsynced"), endLSN+64, endLSN)
	copy(b[end:], []byte("torn bytes here!"))
	copy(b[end+64:], f)
	fs.WriteFile(p, b)
}
