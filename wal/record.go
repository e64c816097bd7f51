package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Frame layout; see doc.go for the drawing.
const (
	// frameHeaderSize is the size of a frame header. On-disk format; never
	// change.
	frameHeaderSize = 24
	// frameAlign is the alignment of every frame's start and size (frames
	// are zero-padded). On-disk format; never change.
	frameAlign = 8
	// maxPayload is the largest payload the 32-bit length field can carry.
	// On-disk format; never change.
	maxPayload = 1<<32 - 1
)

// castagnoli is the CRC-32C table. On-disk format; never change.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errShortFrame means the bytes end before the frame does.
var errShortFrame = errors.New("wal: frame runs past the end of its bytes")

// errBadFrame means the bytes at a position are not a valid frame for that
// position.
var errBadFrame = errors.New("wal: invalid frame")

func alignUp(n int) int { return (n + frameAlign - 1) &^ (frameAlign - 1) }

// frameSize returns the padded size of a frame carrying n payload bytes.
func frameSize(n int) int { return alignUp(frameHeaderSize + n) }

// sealFrame fills in the LSN and synced fields of the frame in f (header
// plus payload plus padding, as built by Batch) and replaces the payload-only
// CRC kept in bytes [0,4) with the final checksum.
func sealFrame(f []byte, lsn, synced LSN) {
	binary.LittleEndian.PutUint64(f[8:16], uint64(lsn))
	binary.LittleEndian.PutUint64(f[16:24], uint64(synced))
	crc := crc32.Update(binary.LittleEndian.Uint32(f[0:4]), castagnoli, f[4:frameHeaderSize])
	binary.LittleEndian.PutUint32(f[0:4], crc)
}

// decodeFrame decodes the frame at the start of b, which must sit at LSN
// lsn. It returns the payload (aliasing b), the frame's synced claim and its
// padded size. It returns errShortFrame if b holds the header but ends
// before the frame does (size is then the needed length), or if b is
// shorter than a header (size 0); errBadFrame (wrapped with the reason) if
// the bytes are not a valid frame at lsn.
func decodeFrame(b []byte, lsn LSN) (payload []byte, synced LSN, size int, err error) {
	if len(b) < frameHeaderSize {
		return nil, 0, 0, errShortFrame
	}
	n := binary.LittleEndian.Uint32(b[4:8])
	if uint64(n) > uint64(maxInt-frameHeaderSize-frameAlign) {
		return nil, 0, 0, fmt.Errorf("%w: length %d too large", errBadFrame, n)
	}
	size = frameSize(int(n))
	if got := LSN(binary.LittleEndian.Uint64(b[8:16])); got != lsn {
		return nil, 0, size, fmt.Errorf("%w: LSN field %d, want %d", errBadFrame, got, lsn)
	}
	synced = LSN(binary.LittleEndian.Uint64(b[16:24]))
	if synced > lsn {
		return nil, 0, size, fmt.Errorf("%w: synced field %d beyond LSN %d", errBadFrame, synced, lsn)
	}
	if len(b) < size {
		return nil, 0, size, errShortFrame
	}
	payload = b[frameHeaderSize : frameHeaderSize+int(n)]
	crc := crc32.Update(crc32.Checksum(payload, castagnoli), castagnoli, b[4:frameHeaderSize])
	if want := binary.LittleEndian.Uint32(b[0:4]); crc != want {
		return nil, 0, size, fmt.Errorf("%w: checksum %#08x, want %#08x", errBadFrame, crc, want)
	}
	return payload, synced, size, nil
}

const maxInt = int(^uint(0) >> 1)

var zeroHeader [frameHeaderSize + frameAlign]byte

// maxKeptBatch is the largest buffer a Batch keeps across Reset.
const maxKeptBatch = 4 << 20

// Batch is a reusable buffer of framed records, built by one goroutine and
// handed to Log.Append, which copies it. A Batch is not safe for concurrent
// use; it may be reused (after Reset) as soon as Append returns. The zero
// value is an empty batch.
type Batch struct {
	buf      []byte
	n        int
	maxFrame int
	err      error
}

// Add frames rec and appends it to the batch (rec is copied).
func (b *Batch) Add(rec []byte) {
	start := b.begin()
	b.buf = append(b.buf, rec...)
	b.finish(start)
}

// AddFunc appends one record whose payload encode appends to dst (and
// returns, as append does), so that a record can be encoded straight into
// the batch without an intermediate copy. encode must only append to dst.
func (b *Batch) AddFunc(encode func(dst []byte) []byte) {
	start := b.begin()
	b.buf = encode(b.buf)
	b.finish(start)
}

func (b *Batch) begin() int {
	start := len(b.buf)
	b.buf = append(b.buf, zeroHeader[:frameHeaderSize]...)
	return start
}

func (b *Batch) finish(start int) {
	payload := b.buf[start+frameHeaderSize:]
	if len(payload) > maxPayload {
		if b.err == nil {
			b.err = fmt.Errorf("wal: record of %d bytes exceeds the %d-byte limit", len(payload), maxPayload)
		}
		b.buf = b.buf[:start]
		return
	}
	h := b.buf[start : start+frameHeaderSize]
	// Until Append seals the frame, bytes [0,4) hold the payload's CRC.
	binary.LittleEndian.PutUint32(h[0:4], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(payload)))
	size := frameSize(len(payload))
	if pad := start + size - len(b.buf); pad > 0 {
		b.buf = append(b.buf, zeroHeader[:pad]...)
	}
	b.n++
	b.maxFrame = max(b.maxFrame, size)
}

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	if cap(b.buf) > maxKeptBatch {
		b.buf = nil // a burst is over: do not keep its peak
	}
	b.buf = b.buf[:0]
	b.n = 0
	b.maxFrame = 0
	b.err = nil
}

// Len returns the number of records in the batch.
func (b *Batch) Len() int { return b.n }

// Bytes returns the number of bytes the batch occupies in the log (frames
// with headers and padding).
func (b *Batch) Bytes() int { return len(b.buf) }

// MaxRecordSize returns the largest record payload a log of the given
// segment size accepts: one frame, padded, after the segment header.
func MaxRecordSize(segmentSize int64) int64 {
	return (segmentSize-segmentHeaderSize)&^(frameAlign-1) - frameHeaderSize
}
