package engine

import (
	"io"
	"sync"

	"github.com/shardfn/shardfn/shard"
)

// logDevice is the engine's view of the write-ahead log: shards append
// effect records (shard.Log), the applier reads back what is durable, and
// checkpoints drop what they cover. Positions are byte positions of the
// log stream (wal.LSN).
type logDevice interface {
	shard.Log
	// NewReader reads records from position from (a record boundary), up to
	// what is durable when Next is called; Next returns io.EOF at the
	// durable end and may be called again later to continue.
	NewReader(from uint64) (logReader, error)
	// RemoveBefore lets the log drop segments wholly before pos.
	RemoveBefore(pos uint64) error
	// Err is the failed-stop cause.
	Err() error
	Close() error
}

// logReader iterates records. pos is the record's start; end the position
// after it.
type logReader interface {
	Next() (pos, end uint64, rec []byte, err error)
	Close() error
}

// memLog is the in-memory log of an engine without a data directory:
// appends are "durable" at once, and the applier consumes records from a
// queue of recycled chunks. Nothing survives the process.
type memLog struct {
	mu       sync.Mutex
	pos      uint64
	chunks   []*memChunk // appended, not yet read
	free     []*memChunk
	onAppend func(end uint64)
	closed   bool
}

type memChunk struct {
	start uint64
	buf   []byte
	ends  []int
}

func newMemLog(onAppend func(end uint64)) *memLog { return &memLog{onAppend: onAppend} }

func (l *memLog) Append(b *shard.RecordBatch) (uint64, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	var c *memChunk
	if n := len(l.free); n > 0 {
		c = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		c = &memChunk{}
	}
	c.start = l.pos
	c.buf = append(c.buf[:0], b.Buf...)
	c.ends = append(c.ends[:0], b.Ends...)
	l.chunks = append(l.chunks, c)
	l.pos += uint64(len(b.Buf))
	end := l.pos
	l.mu.Unlock()
	if l.onAppend != nil {
		l.onAppend(end)
	}
	return end, nil
}

func (l *memLog) Durable() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pos
}

func (l *memLog) NewReader(from uint64) (logReader, error) { return &memReader{l: l}, nil }

func (l *memLog) RemoveBefore(uint64) error { return nil }
func (l *memLog) Err() error                { return nil }
func (l *memLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return nil
}

// memReader consumes the memLog's chunks (one reader only).
type memReader struct {
	l   *memLog
	cur *memChunk
	i   int
}

func (r *memReader) Next() (uint64, uint64, []byte, error) {
	for {
		if r.cur != nil && r.i < len(r.cur.ends) {
			start := 0
			if r.i > 0 {
				start = r.cur.ends[r.i-1]
			}
			end := r.cur.ends[r.i]
			r.i++
			return r.cur.start + uint64(start), r.cur.start + uint64(end), r.cur.buf[start:end], nil
		}
		l := r.l
		l.mu.Lock()
		if r.cur != nil {
			if cap(r.cur.buf) > 4<<20 { // a burst is over: do not keep its peak
				r.cur.buf, r.cur.ends = nil, nil
			}
			l.free = append(l.free, r.cur)
			r.cur = nil
		}
		if len(l.chunks) == 0 {
			l.mu.Unlock()
			return 0, 0, nil, io.EOF
		}
		r.cur = l.chunks[0]
		copy(l.chunks, l.chunks[1:])
		l.chunks[len(l.chunks)-1] = nil
		l.chunks = l.chunks[:len(l.chunks)-1]
		r.i = 0
		l.mu.Unlock()
	}
}

func (r *memReader) Close() error { return nil }
