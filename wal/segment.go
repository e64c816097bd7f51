package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/shardfn/shardfn/wal/vfs"
)

const (
	// segmentHeaderSize is the size of the header at the start of every
	// segment file. On-disk format; never change.
	segmentHeaderSize = 32
	// segmentMagic marks a segment header. On-disk format; never change.
	segmentMagic = "SFWL"
	// segmentVersion is the format version new headers get. On-disk
	// format; never change (bump it and keep reading the old ones instead).
	// Version 1: the reserved field is 0. Version 2: it holds the size the
	// file was preallocated to.
	segmentVersion = 2

	segmentSuffix = ".wal"
	recyclePrefix = "recycle-"
	// recycleLimit is how many removed segment files are kept for reuse.
	recycleLimit = 2
)

// segmentName returns the file name of segment num.
func segmentName(num uint64) string { return fmt.Sprintf("%016x%s", num, segmentSuffix) }

// recycleName returns the file name a removed segment waits under.
func recycleName(num uint64) string {
	return fmt.Sprintf("%s%016x%s", recyclePrefix, num, segmentSuffix)
}

// parseName classifies a directory entry.
func parseName(name string) (num uint64, recycled, ok bool) {
	s, found := strings.CutSuffix(name, segmentSuffix)
	if !found {
		return 0, false, false
	}
	s, recycled = strings.CutPrefix(s, recyclePrefix)
	if len(s) != 16 {
		return 0, false, false
	}
	num, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, false, false
	}
	return num, recycled, true
}

func encodeSegmentHeader(dst []byte, num uint64, base LSN, size int64) {
	_ = dst[segmentHeaderSize-1]
	copy(dst[4:8], segmentMagic)
	binary.LittleEndian.PutUint32(dst[8:12], segmentVersion)
	binary.LittleEndian.PutUint32(dst[12:16], uint32(size))
	binary.LittleEndian.PutUint64(dst[16:24], num)
	binary.LittleEndian.PutUint64(dst[24:32], uint64(base))
	binary.LittleEndian.PutUint32(dst[0:4], crc32.Checksum(dst[4:segmentHeaderSize], castagnoli))
}

// segmentHeader is a decoded segment header.
type segmentHeader struct {
	num  uint64
	base LSN
	size int64 // preallocated file size (version 2); 0 if unknown (version 1)
	err  error // why the header is invalid (recovery)
}

// decodeSegmentHeader checks the header of segment num.
func decodeSegmentHeader(b []byte, num uint64) (segmentHeader, error) {
	h := segmentHeader{num: num}
	if len(b) < segmentHeaderSize {
		return h, errors.New("short header")
	}
	if crc32.Checksum(b[4:segmentHeaderSize], castagnoli) != binary.LittleEndian.Uint32(b[0:4]) {
		return h, errors.New("header checksum mismatch")
	}
	if string(b[4:8]) != segmentMagic {
		return h, errors.New("bad magic")
	}
	switch v := binary.LittleEndian.Uint32(b[8:12]); v {
	case 1:
	case 2:
		h.size = int64(binary.LittleEndian.Uint32(b[12:16]))
	default:
		return h, fmt.Errorf("unknown format version %d", v)
	}
	if got := binary.LittleEndian.Uint64(b[16:24]); got != num {
		return h, fmt.Errorf("header names segment %d", got)
	}
	h.base = LSN(binary.LittleEndian.Uint64(b[24:32]))
	if h.base%frameAlign != 0 {
		return h, fmt.Errorf("unaligned base LSN %d", h.base)
	}
	return h, nil
}

// segment describes one live segment file.
type segment struct {
	num  uint64
	base LSN
	// end is the LSN just past the segment's last record once the segment is
	// complete (a later segment exists); ended is false for the active one.
	end   LSN
	ended bool
}

// fileOffset returns the file offset of lsn in a segment starting at base.
func fileOffset(base, lsn LSN) int64 { return segmentHeaderSize + int64(lsn-base) }

// readChunk is how much a scanner reads at a time.
const readChunk = 1 << 20

// scanner reads frames of one segment file through a buffer. Not safe for
// concurrent use.
type scanner struct {
	f    vfs.File
	path string
	base LSN
	size int64 // file size, read when the scanner is set up

	buf    []byte
	bufOff int64 // file offset of buf[0]
}

func (s *scanner) reset(f vfs.File, path string, base LSN) error {
	size, err := f.Size()
	if err != nil {
		return err
	}
	s.f, s.path, s.base, s.size = f, path, base, size
	s.buf = s.buf[:0]
	s.bufOff = 0
	return nil
}

// refreshSize re-reads the file size (the active segment grows).
func (s *scanner) refreshSize() error {
	size, err := s.f.Size()
	if err != nil {
		return err
	}
	s.size = size
	return nil
}

// bytesAt returns up to n bytes at file offset off (fewer at the end of the
// file), reading through the buffer.
func (s *scanner) bytesAt(off int64, n int) ([]byte, error) {
	if off >= s.bufOff && off+int64(n) <= s.bufOff+int64(len(s.buf)) {
		i := int(off - s.bufOff)
		return s.buf[i : i+n], nil
	}
	if off >= s.size {
		return nil, nil
	}
	want := max(n, readChunk)
	if rem := s.size - off; int64(want) > rem {
		want = int(rem)
	}
	if cap(s.buf) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	got, err := s.f.ReadAt(s.buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
		s.buf = s.buf[:0]
		return nil, fmt.Errorf("wal: read %s at %d: %w", s.path, off, err)
	}
	s.buf = s.buf[:got]
	s.bufOff = off
	return s.buf[:min(n, got)], nil
}

// frame decodes the frame at lsn. The payload is valid until the next call.
// It returns errShortFrame or errBadFrame (wrapped) for bytes that are not a
// whole valid frame, and other errors for I/O failures.
func (s *scanner) frame(lsn LSN) (payload []byte, synced LSN, size int, err error) {
	off := fileOffset(s.base, lsn)
	b, err := s.bytesAt(off, frameHeaderSize)
	if err != nil {
		return nil, 0, 0, err
	}
	payload, synced, size, err = decodeFrame(b, lsn)
	if err != errShortFrame || len(b) < frameHeaderSize {
		return payload, synced, size, err
	}
	if b, err = s.bytesAt(off, size); err != nil {
		return nil, 0, 0, err
	}
	return decodeFrame(b, lsn)
}

// endLSN returns the LSN that corresponds to the end of the file.
func (s *scanner) endLSN() LSN {
	if s.size <= segmentHeaderSize {
		return s.base
	}
	return s.base + LSN(s.size-segmentHeaderSize)
}

// corruptError builds the error for corruption found at lsn.
func (s *scanner) corruptError(lsn LSN, cause error) error {
	return fmt.Errorf("%w: segment %s offset %d (LSN %d): %v",
		ErrCorrupt, s.path, fileOffset(s.base, lsn), lsn, cause)
}

// scanEnd walks the frames from lsn and returns the LSN just past the last
// whole valid frame, stopping at limit (if limit > 0) or at the first
// invalid frame, whose error it returns as stopErr (nil when limit was
// reached exactly or the file ended cleanly).
func (s *scanner) scanEnd(lsn, limit LSN, stopAtLimit bool) (end LSN, stopErr error, err error) {
	for {
		if stopAtLimit && lsn >= limit {
			if lsn > limit {
				return lsn, fmt.Errorf("record ends at LSN %d, past the next segment's base %d", lsn, limit), nil
			}
			return lsn, nil, nil
		}
		_, _, size, ferr := s.frame(lsn)
		if ferr != nil {
			if errors.Is(ferr, errShortFrame) || errors.Is(ferr, errBadFrame) {
				return lsn, ferr, nil
			}
			return lsn, nil, ferr
		}
		lsn += LSN(size)
	}
}

// findClaim looks, at every aligned position after p up to the end of the
// file, for a valid frame whose synced field is beyond p: proof that the
// bytes at p had been made durable, so that an invalid frame at p is
// corruption rather than a torn tail. It returns the LSN of the first such
// frame, or ok false.
func (s *scanner) findClaim(p LSN) (at LSN, ok bool, err error) {
	end := s.endLSN()
	for q := p + frameAlign; q+frameHeaderSize <= end; q += frameAlign {
		b, err := s.bytesAt(fileOffset(s.base, q), frameHeaderSize)
		if err != nil {
			return 0, false, err
		}
		if len(b) < frameHeaderSize || LSN(binary.LittleEndian.Uint64(b[8:16])) != q {
			continue
		}
		_, synced, _, ferr := s.frame(q)
		if ferr == nil && synced > p {
			return q, true, nil
		}
		if ferr != nil && !errors.Is(ferr, errShortFrame) && !errors.Is(ferr, errBadFrame) {
			return 0, false, ferr
		}
	}
	return 0, false, nil
}

// tornTail returns how many bytes after p were written in this life of the
// file: up to the end of the last frame header, at an aligned position
// q >= p, whose LSN field is q. Bytes of the file's earlier life (a
// recycled segment holds frames with older LSNs) and preallocated zeros do
// not count, so a clean end reports 0.
func (s *scanner) tornTail(p LSN) (int64, error) {
	end := s.endLSN()
	var last LSN
	found := false
	for q := p; q+frameHeaderSize <= end; q += frameAlign {
		b, err := s.bytesAt(fileOffset(s.base, q), frameHeaderSize)
		if err != nil {
			return 0, err
		}
		if len(b) == frameHeaderSize && LSN(binary.LittleEndian.Uint64(b[8:16])) == q {
			last, found = q, true
		}
	}
	if !found {
		return 0, nil
	}
	return int64(last-p) + frameHeaderSize, nil
}

// dropFrom forgets buffered bytes at file offsets >= off.
func (s *scanner) dropFrom(off int64) {
	if off < s.bufOff {
		s.buf = s.buf[:0]
	} else if off < s.bufOff+int64(len(s.buf)) {
		s.buf = s.buf[:off-s.bufOff]
	}
}
