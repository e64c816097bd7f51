package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/shard"
	"github.com/shardfn/shardfn/store"
)

// Engine runs function instances on shards. It is safe for concurrent use.
// Open makes one; Close ends it.
type Engine struct {
	opts    Options
	logger  *slog.Logger
	reg     *registry
	shards  []*shard.Shard
	log     logDevice
	st      store.Store
	ap      *applier
	boot    uint16
	metrics *metrics

	ingressSeq atomic.Uint64
	requests   requestTable

	closed    atomic.Bool
	ready     atomic.Bool
	failErr   atomic.Pointer[error]
	inflight  sync.WaitGroup // ingress calls admitted and still pushing
	closeOnce sync.Once
	closeErr  error

	// applier signalling
	apWake   chan struct{}
	apStop   chan struct{}
	apDone   chan struct{}
	egressMu sync.Mutex
	egressCh chan struct{} // closed and replaced when egress records are applied

	ckptReq chan chan error
	// overloadErr holds one preallocated error per shard, so that refusing
	// a message under overload allocates nothing.
	overloadErr []error

	recovery RecoveryStats
}

// RecoveryStats describe the last Open.
type RecoveryStats struct {
	// Records and Bytes replayed from the log after the checkpoint.
	Records uint64
	Bytes   uint64
	// Pending and Timers restored.
	Pending, Timers int
	// Duration of the whole Open.
	Duration time.Duration
}

// Recovery returns the figures of the recovery done by Open.
func (e *Engine) Recovery() RecoveryStats { return e.recovery }

// Open opens the engine: it recovers the store and the log in
// opts.DataDir (replaying the log after the last checkpoint), restores
// in-flight and delayed messages, and starts the shards.
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
		egressCh: make(chan struct{}),
	}
	e.requests.init()
	e.metrics = newMetrics(e)
	reg.setShards(opts.Shards)
	e.ckptReq = make(chan chan error)
	if opts.DataDir == "" {
		e.st = store.NewMemory()
		e.log = newMemLog(func(uint64) { e.onDurable() })
	} else {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("engine: data directory: %w", err)
		}
		ps, err := store.OpenPebble(filepath.Join(opts.DataDir, "store"), store.PebbleOptions{})
		if err != nil {
			return nil, dataDirError(opts.DataDir, err) // "in use by another process" for a held lock
		}
		e.st = ps
	}
	fail := func(err error) (*Engine, error) {
		if e.log != nil {
			_ = e.log.Close()
		}
		_ = e.st.Close()
		return nil, err
	}
	// Boot number: makes message ids unique across restarts.
	bb, err := e.st.Get(store.BootKey)
	if err != nil {
		return fail(err)
	}
	if len(bb) == 2 {
		e.boot = binary.LittleEndian.Uint16(bb) + 1
	}
	{
		b := e.st.NewBatch()
		b.Set(store.BootKey, binary.LittleEndian.AppendUint16(nil, e.boot))
		if err := b.Commit(); err != nil {
			return fail(err)
		}
		if err := e.st.Flush(); err != nil {
			return fail(err)
		}
	}
	if err := reg.loadSpecs(e.st); err != nil {
		return fail(err)
	}
	e.ap = newApplier(e, e.st)
	if err := e.ap.load(); err != nil {
		return fail(fmt.Errorf("engine: load checkpoint: %w", err))
	}
	if opts.DataDir != "" {
		lg, err := openWALLog(opts, e.ap.pos, e.onDurable, e.metrics.walFlush)
		if err != nil {
			return fail(err)
		}
		e.log = lg
	}
	// Replay the log after the checkpoint.
	from := e.ap.pos
	n, err := e.ap.catchUp()
	if err != nil {
		return fail(fmt.Errorf("engine: recovery: %w", err))
	}
	e.recovery.Records = uint64(n)
	e.recovery.Bytes = e.ap.pos - from
	if n > 0 && opts.DataDir != "" {
		if err := e.ap.checkpoint(); err != nil {
			return fail(err)
		}
	}
	// Shards.
	e.shards = make([]*shard.Shard, opts.Shards)
	for i := range e.shards {
		e.shards[i] = shard.New(shard.Config{
			Index:           i,
			Count:           opts.Shards,
			Handler:         newShardHandler(e, i),
			Log:             e.shardLog(),
			Store:           e.st,
			ArenaBudget:     opts.MemoryBudget / int64(opts.Shards),
			MailboxCapacity: opts.MailboxCapacity,
			Clock:           func() int64 { return time.Now().UnixNano() },
			IDBase:          shard.MessageID(e.boot, uint8(i), 0),
			MaxStateBytes:   opts.MaxStateBytes,
			Logger:          e.logger,
		})
	}
	for i := range e.shards {
		e.overloadErr = append(e.overloadErr, fmt.Errorf("%w: shard %d mailbox is full", ErrOverloaded, i))
	}
	for _, s := range e.shards {
		s.Connect(e.shards)
		s.SetApplied(e.ap.pos)
	}
	// Restore in-flight and delayed messages.
	for _, loc := range e.ap.pending {
		m, err := shard.DecodeStoredMessage(e.ap.pendBuf[loc[0] : loc[0]+loc[1]])
		if err != nil {
			return fail(fmt.Errorf("engine: recovery: %w", err))
		}
		e.shardFor(m.Env.Target).Restore(m.Env)
	}
	e.recovery.Pending = len(e.ap.pending)
	if err := e.st.Scan('t', func(k, v []byte) error {
		m, err := shard.DecodeStoredMessage(v)
		if err != nil {
			return err
		}
		e.shardFor(m.Env.Caller).RestoreTimer(m.FireAt, m.Env, m.Token)
		e.recovery.Timers++
		return nil
	}); err != nil {
		return fail(fmt.Errorf("engine: recovery of delayed messages: %w", err))
	}
	for _, s := range e.shards {
		s.Start()
	}
	go e.runApplier()
	e.recovery.Duration = time.Since(start)
	e.ready.Store(true)
	e.logger.Info("engine ready",
		"data_dir", opts.DataDir, "shards", opts.Shards, "boot", e.boot,
		"replayed_records", e.recovery.Records, "replayed_bytes", e.recovery.Bytes,
		"restored_in_flight", e.recovery.Pending, "restored_timers", e.recovery.Timers,
		"recovery", e.recovery.Duration.String())
	return e, nil
}

// shardLog returns the log view a shard appends through.
func (e *Engine) shardLog() shard.Log {
	if w, ok := e.log.(*walLog); ok {
		return w.forShard()
	}
	return e.log
}

func (e *Engine) shardFor(a Address) *shard.Shard {
	return e.shards[shard.ShardOf(shard.KeyGroup(a.Hash()), len(e.shards))]
}

// onDurable is called by the log after each sync.
func (e *Engine) onDurable() {
	select {
	case e.apWake <- struct{}{}:
	default:
	}
	for _, s := range e.shards {
		s.NotifyDurable()
	}
}

func (e *Engine) runApplier() {
	defer close(e.apDone)
	tick := time.NewTicker(e.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		stopping := false
		checkpoint := false
		var reply chan error
		select {
		case reply = <-e.ckptReq:
			checkpoint = true
		case <-e.apWake:
		case <-tick.C:
			checkpoint = e.opts.DataDir != ""
		case <-e.apStop:
			stopping = true
		}
		if _, err := e.ap.catchUp(); err != nil {
			e.failStop(err)
		}
		pos := e.ap.pos
		for _, s := range e.shards {
			s.SetApplied(pos)
		}
		if e.ap.egressW {
			e.egressMu.Lock()
			close(e.egressCh)
			e.egressCh = make(chan struct{})
			e.egressMu.Unlock()
		}
		if checkpoint {
			err := e.Err()
			if err == nil {
				if err = e.ap.checkpoint(); err != nil {
					e.failStop(err)
				}
			}
			if reply != nil {
				reply <- err
			}
		}
		if stopping {
			return
		}
	}
}

func (e *Engine) failStop(err error) {
	if e.failErr.CompareAndSwap(nil, &err) {
		e.logger.Error("engine failed-stop: acknowledging nothing more; restart to recover", "err", err)
	}
}

// Err is the failed-stop cause, if the engine stopped accepting writes.
func (e *Engine) Err() error {
	if p := e.failErr.Load(); p != nil {
		return fmt.Errorf("%w: %v", ErrFailed, *p)
	}
	if err := e.log.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	for _, s := range e.shards {
		if err := s.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
	}
	return nil
}

// Ready reports whether the engine has recovered and accepts messages.
func (e *Engine) Ready() bool { return e.ready.Load() && !e.closed.Load() && e.Err() == nil }

// Options returns the effective options.
func (e *Engine) Options() Options { return e.opts }

// enter admits one ingress call; leave ends it.
func (e *Engine) enter() error {
	e.inflight.Add(1)
	if e.closed.Load() {
		e.inflight.Done()
		return ErrClosed
	}
	if err := e.Err(); err != nil {
		e.inflight.Done()
		return err
	}
	return nil
}

// leaveOnce returns the matching exit of enter, safe to call twice. Ingress
// calls leave as soon as their messages are pushed, so that Close waits for
// pushes (nothing is pushed after its drain) but not for replies.
func (e *Engine) leaveOnce() func() {
	done := false
	return func() {
		if !done {
			done = true
			e.inflight.Done()
		}
	}
}

func (e *Engine) validate(to Address, msg Message) error {
	if to.Namespace == "" || to.Type == "" || to.ID == "" {
		return fmt.Errorf("%w: %q: namespace, type and id must all be non-empty", ErrBadAddress, to.String())
	}
	if len(to.Namespace) > 255 || len(to.Type) > 255 || len(to.ID) > 1024 {
		return fmt.Errorf("%w: %q: namespace and type at most 255 bytes, id at most 1024", ErrBadAddress, to.String())
	}
	if msg.Type == "" {
		return fmt.Errorf("%w: the message has no type name", ErrBadMessage)
	}
	if len(msg.Value) > e.opts.MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg.Value), e.opts.MaxMessageBytes)
	}
	return e.reg.checkIngress(to, msg.Type) // unknown function type or refused message type
}

func (e *Engine) ingressID() uint64 {
	return shard.MessageID(e.boot, 255, e.ingressSeq.Add(1))
}

func (e *Engine) push(env *shard.Envelope) error {
	s := e.shardFor(env.Target)
	if !s.Mailbox().Push(env) {
		e.metrics.overloaded.Inc()
		return e.overloadErr[s.Index()]
	}
	s.AddIngress(1)
	return nil
}

// Send accepts one message and returns once the invocation that consumed
// it is durable. The returned id identifies the message.
func (e *Engine) Send(ctx context.Context, to Address, msg Message) (uint64, error) {
	if err := e.enter(); err != nil {
		return 0, err
	}
	leave := e.leaveOnce()
	defer leave()
	if err := e.validate(to, msg); err != nil {
		return 0, err
	}
	ack := shard.NewAck(1)
	env := shard.Envelope{ID: e.ingressID(), Target: to, Type: msg.Type, Payload: msg.Value, Ack: ack}
	if err := e.push(&env); err != nil {
		return 0, err
	}
	leave() // accepted: Close may drain it now
	select {
	case <-ack.Done():
		if err := ack.Err(); err != nil {
			return env.ID, fmt.Errorf("%w: %v", ErrFailed, err)
		}
		return env.ID, nil
	case <-ctx.Done():
		return env.ID, fmt.Errorf("engine: send %s: %w (the message may still be processed)", to, ctx.Err())
	}
}

// SendAsync accepts one message without waiting for durability: nothing
// is acknowledged, so the caller learns nothing about its fate. For
// benchmarks and fire-and-forget producers that tolerate loss on a crash.
func (e *Engine) SendAsync(to Address, msg Message) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if err := e.validate(to, msg); err != nil {
		return err
	}
	env := shard.Envelope{ID: e.ingressID(), Target: to, Type: msg.Type, Payload: msg.Value}
	return e.push(&env)
}

// SendBatch accepts many messages and returns once all are durable. On
// error, messages before the failing one may have been accepted (each at
// most once); none after it.
func (e *Engine) SendBatch(ctx context.Context, msgs []Outgoing) error {
	if err := e.enter(); err != nil {
		return err
	}
	leave := e.leaveOnce()
	defer leave()
	for i := range msgs {
		if err := e.validate(msgs[i].To, msgs[i].Message); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	ack := shard.NewAck(len(msgs))
	var pushErr error
	for i := range msgs {
		env := shard.Envelope{ID: e.ingressID(), Target: msgs[i].To, Type: msgs[i].Message.Type, Payload: msgs[i].Message.Value, Ack: ack}
		if err := e.push(&env); err != nil {
			pushErr = fmt.Errorf("message %d: %w", i, err)
			for j := i; j < len(msgs); j++ {
				ack.Release(nil)
			}
			break
		}
	}
	leave()
	select {
	case <-ack.Done():
		if err := ack.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
		return pushErr
	case <-ctx.Done():
		return fmt.Errorf("engine: batch: %w (messages may still be processed)", ctx.Err())
	}
}

// Request sends msg and waits for the Reply of the chain it starts, up to
// ctx's deadline (ErrNoReply). Replies are released only once the effects
// that made them are durable.
func (e *Engine) Request(ctx context.Context, to Address, msg Message) (Message, error) {
	if err := e.enter(); err != nil {
		return Message{}, err
	}
	leave := e.leaveOnce()
	defer leave()
	if err := e.validate(to, msg); err != nil {
		return Message{}, err
	}
	id, ch := e.requests.add()
	defer e.requests.remove(id)
	env := shard.Envelope{ID: e.ingressID(), Target: to, Type: msg.Type, Payload: msg.Value, ReplyTo: id}
	if err := e.push(&env); err != nil {
		return Message{}, err
	}
	leave()
	select {
	case r, ok := <-ch:
		if !ok {
			return Message{}, fmt.Errorf("%w: no reply came before the engine closed", ErrClosed)
		}
		return r, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Message{}, fmt.Errorf("%w: %s (the message is still processed exactly once)", ErrNoReply, to)
		}
		return Message{}, ctx.Err()
	}
}

// ReadEgress reads durable records of egress name from offset from, at most
// max (default 100, at most 10000) and, when maxBytes > 0, at most maxBytes
// bytes of records (each counted as its source, type and value), except
// that the first record is always returned whatever its size, so a reader
// always progresses. With wait > 0 it long-polls until at least one record
// exists, wait passes, or ctx ends.
func (e *Engine) ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]EgressRecord, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty egress name", ErrBadMessage)
	}
	if max <= 0 {
		max = 100
	}
	if max > 10000 {
		max = 10000
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		e.egressMu.Lock()
		ch := e.egressCh
		e.egressMu.Unlock()
		var out []EgressRecord
		var derr error
		size := 0
		err := e.st.ReadEgress(name, from, max, func(off uint64, v []byte) bool {
			if maxBytes > 0 && len(out) > 0 && size+len(v) > maxBytes {
				return false // over the byte budget: the caller continues from here
			}
			size += len(v)
			src, typ, payload, err := store.DecodeEgressValue(v)
			if err != nil {
				derr = err
				return false
			}
			out = append(out, EgressRecord{Offset: off, Source: src,
				Message: Message{Type: string(typ), Value: append([]byte(nil), payload...)}})
			return true
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return nil, fmt.Errorf("engine: read egress %s: %w", name, err)
		}
		if len(out) > 0 || deadline == nil {
			return out, nil
		}
		select {
		case <-ch:
		case <-deadline:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// State returns the durable state values of an instance: what the store
// holds once everything durable at the time of the call is applied.
func (e *Engine) State(ctx context.Context, addr Address) ([]StateValue, error) {
	if addr.Namespace == "" || addr.Type == "" || addr.ID == "" {
		return nil, fmt.Errorf("%w: %q", ErrBadAddress, addr.String())
	}
	if err := e.waitApplied(ctx, e.log.Durable()); err != nil {
		return nil, err
	}
	specs, err := e.reg.stateSpecs(addr) // ErrUnknownType for an unregistered type
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	var out []StateValue
	raw := shard.AppendAddress(nil, addr)
	err = e.st.LoadInstance(shard.KeyGroup(addr.Hash()), raw, func(name []byte, writtenAt int64, value []byte) {
		sv := StateValue{Spec: ValueSpec{Name: string(name)}, Value: append([]byte(nil), value...), Present: true}
		for _, sp := range specs {
			if sp.Name == sv.Spec.Name {
				sv.Spec = fromShardSpec(sp)
				if sp.Mode != shard.ExpireNever && sp.Expiry > 0 && now-writtenAt >= sp.Expiry {
					return
				}
			}
		}
		out = append(out, sv)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: state of %s: %w", addr, err)
	}
	return appendUnset(out, specs), nil // declared values not set: Present false
}

// waitApplied waits until the store has applied the log up to pos.
func (e *Engine) waitApplied(ctx context.Context, pos uint64) error {
	for e.ap.applied.Load() < pos {
		select {
		case e.apWake <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
		if err := e.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint takes a checkpoint now (durable engines only).
func (e *Engine) Checkpoint() error {
	if e.opts.DataDir == "" {
		return nil
	}
	done := make(chan error, 1)
	select {
	case e.ckptReq <- done:
		return <-done
	case <-e.apDone:
		return ErrClosed
	}
}

// quiescent reports whether no message is queued, in flight between
// shards or waiting for durability anywhere.
func (e *Engine) quiescent() bool {
	var consumed, produced uint64
	for _, s := range e.shards {
		consumed += s.ConsumedCount()
	}
	for _, s := range e.shards {
		produced += s.ProducedCount()
	}
	if consumed != produced {
		return false
	}
	for _, s := range e.shards {
		if s.Unreleased() > 0 || s.Mailbox().Len() > 0 {
			return false
		}
	}
	return true
}

// Drain waits until the engine is quiescent: every accepted message and
// every message sent by functions processed (delayed messages still
// pending are not waited for). For tests and benchmarks.
func (e *Engine) Drain(ctx context.Context) error {
	stable := 0
	for stable < 3 {
		if e.quiescent() {
			stable++
		} else {
			stable = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if err := e.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Close stops intake, drains in-flight work, checkpoints and closes. Delayed
// messages that are not yet due stay durable and fire after the next Open.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		e.inflight.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.Drain(ctx); err != nil && e.Err() == nil {
			e.logger.Warn("close: drain did not finish", "err", err)
		}
		cancel()
		for _, s := range e.shards {
			s.Stop()
		}
		close(e.apStop)
		<-e.apDone
		var errs []error
		if e.Err() == nil && e.opts.DataDir != "" {
			if _, err := e.ap.catchUp(); err != nil {
				errs = append(errs, err)
			} else if err := e.ap.checkpoint(); err != nil {
				errs = append(errs, err)
			}
		}
		e.requests.closeAll()
		if err := e.log.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := e.st.Close(); err != nil {
			errs = append(errs, err)
		}
		e.closeErr = errors.Join(errs...)
		e.logger.Info("engine closed", "err", e.closeErr)
	})
	return e.closeErr
}

// Collectors returns the engine's Prometheus collectors.
func (e *Engine) Collectors() []prometheus.Collector { return e.metrics.collectors() }

// requestTable maps request ids to waiting Request calls. Sharded to keep
// contention low.
type requestTable struct {
	seq   atomic.Uint64
	parts [16]struct {
		mu sync.Mutex
		m  map[uint64]chan Message
		_  [40]byte
	}
}

func (t *requestTable) init() {
	for i := range t.parts {
		t.parts[i].m = map[uint64]chan Message{}
	}
}

func (t *requestTable) add() (uint64, chan Message) {
	id := t.seq.Add(1)
	ch := make(chan Message, 1)
	p := &t.parts[id%16]
	p.mu.Lock()
	p.m[id] = ch
	p.mu.Unlock()
	return id, ch
}

func (t *requestTable) remove(id uint64) {
	p := &t.parts[id%16]
	p.mu.Lock()
	delete(p.m, id)
	p.mu.Unlock()
}

func (t *requestTable) deliver(id uint64, m Message) {
	p := &t.parts[id%16]
	p.mu.Lock()
	ch := p.m[id]
	delete(p.m, id)
	p.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// closeAll wakes every waiting Request with ErrClosed (Close calls it once
// the shards have stopped, so no reply can come any more). deliver removes
// an entry before sending on it, so a channel is never both sent on and
// closed.
func (t *requestTable) closeAll() {
	for i := range t.parts {
		p := &t.parts[i]
		p.mu.Lock()
		for id, ch := range p.m {
			close(ch)
			delete(p.m, id)
		}
		p.mu.Unlock()
	}
}

// defaults

// EnsureDefaults fills in zero fields.
func (o *Options) EnsureDefaults() {
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = 256 << 20
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 4 << 20
	}
	if o.MaxStateBytes <= 0 {
		o.MaxStateBytes = 16 << 20
	}
	if o.MailboxCapacity <= 0 {
		o.MailboxCapacity = 16384
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 10 * time.Second
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Shards < 1 || o.Shards > 255:
		return fmt.Errorf("engine: Shards %d out of range 1..255", o.Shards)
	case o.MemoryBudget < int64(o.Shards)*64<<10:
		return fmt.Errorf("engine: MemoryBudget %d below 64 KiB per shard", o.MemoryBudget)
	case o.MaxBatchDelay < 0 || o.MaxBatchDelay > time.Second:
		return fmt.Errorf("engine: MaxBatchDelay %v out of range 0..1s", o.MaxBatchDelay)
	case o.SegmentSize < 64<<10:
		return fmt.Errorf("engine: SegmentSize %d below 64 KiB", o.SegmentSize)
	}
	return nil
}
