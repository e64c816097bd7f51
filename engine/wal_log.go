package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/wal"
)

// walLog adapts the group-commit log (package wal) to the engine.
type walLog struct {
	l *wal.Log
}

func openWALLog(opts Options, checkpoint uint64, onDurable func(), onFlush func(int, time.Duration)) (*walLog, error) {
	wo := wal.Options{
		Dir:             filepath.Join(opts.DataDir, "wal"),
		FS:              opts.fs.Log,
		SegmentSize:     opts.SegmentSize,
		MaxBatchDelay:   opts.MaxBatchDelay,
		OnDurable:       func(wal.LSN) { onDurable() },
		OnFlush:         onFlush,
		Logger:          opts.Logger,
		KnownDurable:    wal.LSN(checkpoint),
		KnownDurableWhy: "the store's checkpoint covers it",
		AcceptLoss:      opts.AcceptLogLoss,
		Manual:          opts.manual,
	}
	l, err := wal.Open(wo)
	if err != nil {
		if errors.Is(err, wal.ErrLost) {
			return nil, fmt.Errorf("engine: open log: %w (start with AcceptLogLoss, --accept-log-loss, to run on without them)", err)
		}
		return nil, fmt.Errorf("engine: open log: %w", err)
	}
	return &walLog{l: l}, nil
}

// forShard returns an appender with its own reusable batch.
func (w *walLog) forShard() *walShardLog { return &walShardLog{w: w} }

func (w *walLog) Append(b *shard.RecordBatch) (uint64, error) {
	return w.forShard().Append(b)
}

func (w *walLog) Durable() uint64 { return uint64(w.l.DurableLSN()) }

func (w *walLog) NewReader(from uint64) (logReader, error) {
	r, err := w.l.NewReader(wal.LSN(from))
	if err != nil {
		return nil, err
	}
	return &walReader{r: r}, nil
}

func (w *walLog) RemoveBefore(pos uint64) error { return w.l.RemoveBefore(wal.LSN(pos)) }
func (w *walLog) Err() error                    { return w.l.Err() }
func (w *walLog) Close() error                  { return w.l.Close() }

// walShardLog is one shard's appender (shard.Log): it reuses one wal.Batch.
type walShardLog struct {
	w *walLog
	b wal.Batch
}

func (s *walShardLog) Append(rb *shard.RecordBatch) (uint64, error) {
	s.b.Reset()
	for i := 0; i < rb.Len(); i++ {
		s.b.Add(rb.Record(i))
	}
	end, err := s.w.l.Append(&s.b)
	return uint64(end), err
}

func (s *walShardLog) Durable() uint64 { return uint64(s.w.l.DurableLSN()) }

func (s *walShardLog) Err() error { return s.w.l.Err() }

type walReader struct {
	r *wal.Reader
}

func (r *walReader) Next() (uint64, uint64, []byte, error) {
	lsn, rec, err := r.r.Next()
	if err != nil {
		return 0, 0, nil, err
	}
	return uint64(lsn), uint64(r.r.Pos()), rec, nil
}

func (r *walReader) Close() error { return r.r.Close() }
