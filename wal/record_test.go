package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func buildFrame(payload []byte, lsn, synced LSN) []byte {
	var b Batch
	b.Add(payload)
	f := append([]byte(nil), b.buf...)
	sealFrame(f, lsn, synced)
	return f
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 100, 1000, 4096} {
		p := bytes.Repeat([]byte{byte(n)}, n)
		f := buildFrame(p, 4096, 1024)
		if len(f) != frameSize(n) || len(f)%frameAlign != 0 {
			t.Fatalf("n=%d: frame size %d, want %d", n, len(f), frameSize(n))
		}
		got, synced, size, err := decodeFrame(f, 4096)
		if err != nil || !bytes.Equal(got, p) || synced != 1024 || size != len(f) {
			t.Fatalf("n=%d: decode = %q, %d, %d, %v", n, got, synced, size, err)
		}
	}
}

func TestFrameDecodeRejects(t *testing.T) {
	good := buildFrame([]byte("hello, world"), 800, 400)
	cases := []struct {
		name  string
		frame func() []byte
		lsn   LSN
		want  error
	}{
		{"wrong position", func() []byte { return good }, 808, errBadFrame},
		{"payload bit flip", func() []byte { f := clone(good); f[frameHeaderSize+3] ^= 1; return f }, 800, errBadFrame},
		{"crc bit flip", func() []byte { f := clone(good); f[0] ^= 0x80; return f }, 800, errBadFrame},
		{"synced changed", func() []byte { f := clone(good); f[16]++; return f }, 800, errBadFrame},
		{"synced beyond LSN", func() []byte { return buildFrame([]byte("x"), 800, 900) }, 800, errBadFrame},
		{"length grown", func() []byte {
			f := clone(good)
			binary.LittleEndian.PutUint32(f[4:8], 13)
			return append(f, make([]byte, 8)...)
		}, 800, errBadFrame},
		{"truncated payload", func() []byte { return good[:len(good)-8] }, 800, errShortFrame},
		{"truncated header", func() []byte { return good[:10] }, 800, errShortFrame},
		{"zeros (preallocated space)", func() []byte { return make([]byte, 64) }, 0, errBadFrame},
		{"zeros at LSN 800", func() []byte { return make([]byte, 64) }, 800, errBadFrame},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := decodeFrame(c.frame(), c.lsn)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestBatchAddFuncMatchesAdd(t *testing.T) {
	var a, b Batch
	a.Add([]byte("one"))
	a.Add(nil)
	a.Add([]byte("three33"))
	b.AddFunc(func(dst []byte) []byte { return append(dst, "one"...) })
	b.AddFunc(func(dst []byte) []byte { return dst })
	b.AddFunc(func(dst []byte) []byte { return append(dst, "three33"...) })
	if !bytes.Equal(a.buf, b.buf) || a.Len() != 3 || b.Len() != 3 || a.Bytes() != b.Bytes() {
		t.Fatalf("batches differ: %x vs %x", a.buf, b.buf)
	}
	if want := frameSize(3) + frameSize(0) + frameSize(7); a.Bytes() != want {
		t.Fatalf("Bytes = %d, want %d", a.Bytes(), want)
	}
	a.Reset()
	if a.Len() != 0 || a.Bytes() != 0 {
		t.Fatalf("Reset left %d records, %d bytes", a.Len(), a.Bytes())
	}
}

// FuzzDecode checks that the frame decoder never panics, never returns a
// payload outside its input, and accepts only frames that re-encode to the
// same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(buildFrame([]byte("hello"), 0, 0), uint64(0))
	f.Add(buildFrame([]byte("a longer record payload"), 4096, 64), uint64(4096))
	f.Add(make([]byte, 40), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, lsn uint64) {
		payload, synced, size, err := decodeFrame(b, LSN(lsn))
		if err != nil {
			return
		}
		if size > len(b) || size%frameAlign != 0 || len(payload) > size {
			t.Fatalf("size %d, payload %d, input %d", size, len(payload), len(b))
		}
		re := buildFrame(payload, LSN(lsn), synced)
		if !bytes.Equal(re[:frameHeaderSize+len(payload)], b[:frameHeaderSize+len(payload)]) {
			t.Fatalf("accepted frame does not re-encode: %x vs %x", b[:size], re)
		}
	})
}
