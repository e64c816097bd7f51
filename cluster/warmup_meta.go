package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Encodings of the warm-up balancer's user data (warmup.go).

// encodeWarmupMeta encodes a member's changelog positions: version,
// partition count, number of entries, then (partition gap, position)
// uvarint pairs for the partitions with a position above 0.
func encodeWarmupMeta(pos []int64) []byte {
	n := 0
	for _, o := range pos {
		if o > 0 {
			n++
		}
	}
	b := make([]byte, 0, 8+n*5)
	b = append(b, warmupMetaVersion)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	b = binary.AppendUvarint(b, uint64(n))
	last := -1
	for p, o := range pos {
		if o > 0 {
			b = binary.AppendUvarint(b, uint64(p-last-1))
			b = binary.AppendUvarint(b, uint64(o))
			last = p
		}
	}
	return b
}

// errWarmupMeta: a member's positions cannot be read.
var errWarmupMeta = errors.New("cluster: warm-up metadata")

// decodeWarmupMeta is encodeWarmupMeta's inverse, for a cluster of parts
// partitions.
func decodeWarmupMeta(b []byte, parts int32) ([]int64, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty (the member runs no warm-up balancer)", errWarmupMeta)
	}
	if b[0] != warmupMetaVersion {
		return nil, fmt.Errorf("%w: version %d, this node reads version %d (a newer node? run one version in a cluster)", errWarmupMeta, b[0], warmupMetaVersion)
	}
	r := uvarints{b: b[1:]}
	np, n := r.next(), r.next()
	if r.err == nil && np != uint64(parts) {
		return nil, fmt.Errorf("%w: the member has %d partitions, this node %d", errWarmupMeta, np, parts)
	}
	if r.err == nil && n > uint64(parts) {
		return nil, fmt.Errorf("%w: %d entries for %d partitions", errWarmupMeta, n, parts)
	}
	pos := make([]int64, parts)
	p := int64(-1)
	for i := uint64(0); i < n && r.err == nil; i++ {
		gap, o := r.next(), r.next()
		p += int64(gap) + 1
		if r.err == nil && (gap >= uint64(parts) || p >= int64(parts) || o > 1<<62) {
			r.err = fmt.Errorf("entry %d out of range (partition %d, position %d)", i, p, o)
		}
		if r.err == nil {
			pos[p] = int64(o)
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", errWarmupMeta, r.err)
	}
	return pos, nil
}

// encodeWarmSet encodes the partitions a member is to warm up: version,
// count, partition gaps (ps sorted).
func encodeWarmSet(ps []int32) []byte {
	b := make([]byte, 0, 2+len(ps)*2)
	b = append(b, warmupMetaVersion)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	last := int32(-1)
	for _, p := range ps {
		b = binary.AppendUvarint(b, uint64(p-last-1))
		last = p
	}
	return b
}

// decodeWarmSet is encodeWarmSet's inverse. Empty user data (an
// assignment of cooperative-sticky) is an empty set.
func decodeWarmSet(b []byte, parts int32) ([]int32, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != warmupMetaVersion {
		return nil, fmt.Errorf("%w: warm-up set version %d, this node reads version %d", errWarmupMeta, b[0], warmupMetaVersion)
	}
	r := uvarints{b: b[1:]}
	n := r.next()
	if r.err == nil && n > uint64(parts) {
		return nil, fmt.Errorf("%w: warm-up set of %d partitions, the cluster has %d", errWarmupMeta, n, parts)
	}
	ps := make([]int32, 0, n)
	p := int64(-1)
	for i := uint64(0); i < n && r.err == nil; i++ {
		gap := r.next()
		p += int64(gap) + 1
		if r.err == nil && (gap >= uint64(parts) || p >= int64(parts)) {
			r.err = fmt.Errorf("partition %d out of range", p)
		}
		if r.err == nil {
			ps = append(ps, int32(p))
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: warm-up set: %v", errWarmupMeta, r.err)
	}
	return ps, nil
}

type uvarints struct {
	b   []byte
	err error
}

func (r *uvarints) next() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated")
		return 0
	}
	r.b = r.b[n:]
	return v
}
