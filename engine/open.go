package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/store"
)

// Open opens the engine: it recovers the store and the log in
// opts.DataDir (replaying the log after the last checkpoint), restores
// in-flight and delayed messages, and starts the shards.
//
// Recovery, in order: open the store; reserve message ids; load the
// remembered remote specs and the checkpoint (position, egress offsets,
// in-flight messages); open the log, refusing a log that ends before the
// checkpoint (nothing on disk is changed before that check); replay the
// log after the checkpoint through the applier and checkpoint again; make
// the shards; hand them the in-flight messages and every stored delayed
// message; start.
func Open(opts Options, specs ...FunctionSpec) (*Engine, error) {
	start := time.Now()
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	reg, err := newRegistry(specs)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		opts:     opts,
		logger:   opts.Logger,
		reg:      reg,
		apWake:   make(chan struct{}, 1),
		apStop:   make(chan struct{}),
		apDone:   make(chan struct{}),
		ckptReq:  make(chan chan error),
		egressCh: make(chan struct{}),
		closing:  make(chan struct{}),
	}
	e.requests.init()
	e.keys.init()
	e.tr = newTracing(opts.TracerProvider)
	e.metrics = newMetrics(e)
	reg.setShards(opts.Shards)
	if err := e.openStore(); err != nil {
		return nil, err
	}
	if err := e.recover(); err != nil {
		if e.wal != nil {
			_ = e.wal.Close()
		}
		_ = e.st.Close()
		return nil, err
	}
	e.watch = newStorageWatch(&e.opts)
	e.makeShards()
	if err := e.restore(); err != nil {
		_ = e.wal.Close()
		_ = e.st.Close()
		return nil, err
	}
	if !opts.manual {
		for _, s := range e.shards {
			s.Start()
		}
		if e.cl != nil {
			go e.runClusterFlusher()
		} else {
			go e.runApplier()
		}
		go e.runWatchdog()
	}
	e.recovery.Duration = time.Since(start)
	e.ready.Store(true)
	e.logger.Info("engine ready",
		"data_dir", opts.DataDir, "shards", opts.Shards,
		"replayed_records", e.recovery.Records, "replayed_bytes", e.recovery.Bytes,
		"restored_in_flight", e.recovery.Pending, "restored_timers", e.recovery.Timers,
		"recovery", e.recovery.Duration.String())
	return e, nil
}

// openStore opens the Pebble store in the data directory, or the
// in-memory store and log of an engine without one.
func (e *Engine) openStore() error {
	if e.opts.DataDir == "" {
		e.st = store.NewMemory()
		e.wal = newMemLog(func(uint64) { e.onDurable() })
		return nil
	}
	if e.opts.fs.Store == nil {
		if err := os.MkdirAll(e.opts.DataDir, 0o755); err != nil {
			return fmt.Errorf("engine: data directory: %w", err)
		}
	}
	po := store.PebbleOptions{FS: e.opts.fs.Store, Logger: e.logger}
	if e.opts.manual {
		// The simulator: the store writes only when the engine asks
		// (checkpoints), so that a run depends on its inputs alone.
		po.DisableAutomaticCompactions = true
		po.MemTableSize = 4 << 20
		po.CacheSize = 8 << 20
	}
	ps, err := store.OpenPebble(filepath.Join(e.opts.DataDir, "store"), po)
	if err != nil {
		return dataDirError(e.opts.DataDir, err) // "in use by another process" for a held lock
	}
	e.st = ps
	if e.opts.Cluster != nil {
		e.openCluster()
	}
	return nil
}

// recover reserves ids, loads the checkpoint, opens the log and replays it.
func (e *Engine) recover() error {
	if e.cl != nil {
		return e.recoverCluster()
	}
	ids, err := openIDs(e.st)
	if err != nil {
		return err
	}
	e.ids = ids
	if err := e.reg.loadSpecs(e.st); err != nil {
		return err
	}
	e.ap = newApplier(e.st, e.logger, e.metrics, e.now, applyParts(&e.opts))
	if err := e.ap.load(); err != nil {
		return fmt.Errorf("engine: load checkpoint: %w", err)
	}
	if e.opts.DataDir != "" {
		lg, err := openWALLog(e.opts, e.ap.pos, e.onDurable, e.metrics.walFlush)
		if err != nil {
			return err
		}
		e.wal = lg
	}
	e.ap.log = e.wal
	from := e.ap.pos
	e.ap.startCommitters()
	n, err := e.ap.catchUp()
	e.ap.stopCommitters()
	if err != nil {
		return fmt.Errorf("engine: recovery: %w", err)
	}
	e.recovery.Records = uint64(n)
	e.recovery.Bytes = e.ap.pos - from
	// The checkpoint that covers the replayed log is taken by the applier
	// once the engine runs (runApplier), not before it is ready: until then
	// the log still holds everything since the last checkpoint, so a crash
	// meanwhile replays it again.
	e.replayed = n > 0 && e.opts.DataDir != ""
	return nil
}

func (e *Engine) makeShards() {
	opts := &e.opts
	e.shards = make([]*shard.Shard, opts.Shards)
	for i := range e.shards {
		e.shards[i] = shard.New(shard.Config{
			Index:            i,
			Count:            opts.Shards,
			Handler:          newShardHandler(e, i),
			Log:              e.shardLog(),
			Store:            e.st,
			IDs:              e.ids,
			ArenaBudget:      opts.MemoryBudget / int64(opts.Shards),
			MailboxCapacity:  opts.MailboxCapacity,
			Clock:            e.now,
			MaxStateBytes:    opts.MaxStateBytes,
			MaxRecordBytes:   opts.MaxRecordBytes,
			KeyRetention:     int64(opts.IdempotencyRetention),
			MaxInstanceBytes: opts.MaxInstanceBytes,
			Logger:           e.logger,
			Tracer:           e.shardTracer(i), // nil when tracing is off
			ExternalSends:    e.cl != nil,
			Partition:        e.clusterPartition(),
		})
		e.overloadErr = append(e.overloadErr, fmt.Errorf("%w: shard %d mailbox is full", ErrOverloaded, i))
	}
	for _, s := range e.shards {
		s.Connect(e.shards)
		s.SetApplied(e.ap.pos)
		s.Mailbox().SetSharedBytes(opts.MaxQueuedBytes / int64(opts.Shards))
	}
}

// shardLog returns the log view a shard appends through.
func (e *Engine) shardLog() shard.Log {
	if w, ok := e.wal.(*walLog); ok {
		return w.forShard()
	}
	return e.wal
}

// restore hands the shards the in-flight messages of the checkpoint and the
// replay, and every stored delayed message.
func (e *Engine) restore() error {
	var err error
	e.ap.rangePending(func(enc []byte) bool {
		var m format.StoredMessage
		if m, err = format.DecodeStoredMessage(enc); err != nil {
			err = fmt.Errorf("engine: recovery of in-flight messages: %w", err)
			return false
		}
		e.shardFor(m.Env.Target).Restore(m.Env)
		e.recovery.Pending++
		return true
	})
	if err != nil {
		return err
	}
	err = e.st.ScanTimers(func(_ uint64, v []byte) error {
		m, err := format.DecodeStoredMessage(v)
		if err != nil {
			return err
		}
		if c := e.cl; c != nil && !c.link.Owns(c.link.Partition(format.KeyGroup(m.Env.Caller.Hash()))) {
			return nil // a partition another node owns now: its copy here may be stale
		}
		e.shardFor(m.Env.Caller).RestoreTimer(m.FireAt, m.Env, m.Token)
		e.recovery.Timers++
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: recovery of delayed messages: %w", err)
	}
	return nil
}
