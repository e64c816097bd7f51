package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/shardfn/shardfn/wal/vfs"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

const testDir = "/wal"

func memOptions(fs vfs.FS, segSize int64) Options {
	return Options{Dir: testDir, FS: fs, SegmentSize: segSize, Logger: quietLogger}
}

func mustOpen(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

type rec struct {
	lsn  LSN
	data string
}

// readAllRecords reads every record from FirstLSN to the durable end.
func readAllRecords(t testing.TB, l *Log) []rec {
	t.Helper()
	recs, err := tryReadAll(l)
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	return recs
}

func tryReadAll(l *Log) ([]rec, error) {
	r, err := l.NewReader(l.FirstLSN())
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []rec
	for {
		lsn, b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, rec{lsn, string(b)})
	}
}

// appendOne appends one record and waits for it to be durable.
func appendOne(t testing.TB, l *Log, data string) (lsn, end LSN) {
	t.Helper()
	var b Batch
	b.Add([]byte(data))
	end, err := l.Append(&b)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := l.WaitDurable(end); err != nil {
		t.Fatalf("WaitDurable: %v", err)
	}
	return end - LSN(b.Bytes()), end
}

func payload(i int) string {
	return fmt.Sprintf("record-%04d-%s", i, "abcdefghijklmnopqrstuvwxyz"[:i%27])
}
