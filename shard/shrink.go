package shard

import "github.com/shardfn/shardfn/internal/format"

// Buffers that a burst grew are given back once the burst is over, so that
// memory follows the load and not its peak.

const (
	// maxKeptBuf is the largest byte buffer a shard keeps between Steps.
	maxKeptBuf = 1 << 20
	// maxKeptEnvelopes is the largest envelope slice it keeps.
	maxKeptEnvelopes = 4096
)

// shrink drops scratch buffers over their cap that are empty now.
func (s *Shard) shrink() {
	if cap(s.batch.Buf) > maxKeptBuf && len(s.batch.Buf) == 0 {
		s.batch.Buf, s.batch.Ends = nil, nil
	}
	shrinkBytes(&s.recBuf)
	shrinkBytes(&s.blobBuf)
	shrinkBytes(&s.loadBuf)
	shrinkBytes(&s.inv.valBuf)
	if cap(s.drainBuf) > maxKeptEnvelopes && len(s.drainBuf) == 0 {
		s.drainBuf = nil
	}
	shrinkEnvelopes(&s.unroutable)
	for j := range s.out {
		shrinkEnvelopes(&s.out[j])
		shrinkEnvelopes(&s.backlog[j])
	}
	if cap(s.staged) > maxKeptEnvelopes && len(s.staged) == 0 {
		s.staged = nil
	}
}

func shrinkBytes(b *[]byte) {
	if cap(*b) > maxKeptBuf && len(*b) == 0 {
		*b = nil
	}
}

func shrinkEnvelopes(b *[]format.Envelope) {
	if cap(*b) > maxKeptEnvelopes && len(*b) == 0 {
		*b = nil
	}
}
