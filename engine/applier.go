package engine

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
)

// applier turns the durable log into the store's materialised view. It is
// one goroutine; it reads records in log order (so its writes are ordered
// exactly as on replay), applies their effects to a store batch, commits,
// and publishes how far it got. It also owns checkpoints: between two
// batches it writes the in-flight messages and the egress offsets with the
// position they cover, flushes the store, and lets the log drop what is
// covered.
//
// In-flight messages (sent, not yet consumed) live in a pointer-free map
// into one byte buffer; delayed messages are written to the store at once
// (they may wait for hours) and deleted when consumed or cancelled.
//
// Inserting into Pebble's memtable is most of the applier's cost, and
// Pebble applies batches committed at once in parallel. So state writes go
// to one of several batches by key group (parts), everything else to the
// main batch, and a commit commits them all at once, one goroutine each:
// every key is written by exactly one batch, so each key's writes keep the
// log's order, and the applied position is published only once all are in.
type applier struct {
	st     store.Store
	log    logDevice // set once the log is open
	logger *slog.Logger
	m      *metrics
	now    func() int64
	batch  store.Batch     // everything but state writes
	parts  []store.Batch   // state writes, by key group
	errs   []error         // per part, of the last commit
	work   []chan struct{} // per part but the first: its committer's signal
	wg     sync.WaitGroup  // the committers of a commit
	rd     logReader
	pos    uint64        // every record before pos is applied
	cl     *clusterApply // cluster mode, while an epoch is collected (cluster.go)

	pending  map[uint64][2]uint32 // id -> (offset, length) in pendBuf
	pendBuf  []byte
	pendLive int
	timers   map[uint64]struct{}
	egress   map[string]*uint64 // next offset per egress log
	egressW  bool
	rec      format.Record
	msgBuf   []byte
	keyBuf   []byte

	lastCheckpoint time.Time
	records        atomic.Uint64
	applied        atomic.Uint64
}

// newApplier makes the applier; parts is the number of state batches
// committed in parallel (1 commits everything from the applier goroutine).
func newApplier(st store.Store, logger *slog.Logger, m *metrics, now func() int64, parts int) *applier {
	a := &applier{
		st:      st,
		logger:  logger,
		m:       m,
		now:     now,
		batch:   st.NewBatch(),
		errs:    make([]error, max(parts, 1)),
		pending: map[uint64][2]uint32{},
		timers:  map[uint64]struct{}{},
		egress:  map[string]*uint64{},
	}
	for range max(parts, 1) {
		a.parts = append(a.parts, st.NewBatch())
	}
	return a
}

// applyParts is how many state batches an engine's applier commits in
// parallel: one per core the process may use, at most 8, and one for an
// in-memory store (it takes one lock per commit anyway) and in manual mode
// (the simulator runs every goroutine itself).
func applyParts(o *Options) int {
	if o.DataDir == "" || o.manual {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), 8)
}

// stateBatch is the batch of key group kg's state writes.
func (a *applier) stateBatch(kg uint16) store.Batch { return a.parts[int(kg)%len(a.parts)] }

// pendingOps counts the operations waiting in the batches.
func (a *applier) pendingOps() int {
	n := a.batch.Len()
	for _, b := range a.parts {
		n += b.Len()
	}
	return n
}

// load reads the checkpoint: position, egress offsets, in-flight messages
// and delayed-message ids.
func (a *applier) load() error {
	mb, err := a.st.Get(store.MetaKey)
	if err != nil {
		return err
	}
	if mb != nil {
		m, err := store.DecodeMeta(mb)
		if err != nil {
			return err
		}
		a.pos = m.LSN
		for k, v := range m.Egress {
			a.egress[k] = &v
		}
	}
	a.applied.Store(a.pos)
	if err := a.st.ScanPending(func(id uint64, v []byte) error {
		a.addPending(id, v)
		return nil
	}); err != nil {
		return err
	}
	return a.st.ScanTimers(func(id uint64, _ []byte) error {
		a.timers[id] = struct{}{}
		return nil
	})
}

func (a *applier) addPending(id uint64, enc []byte) {
	off := len(a.pendBuf)
	a.pendBuf = append(a.pendBuf, enc...)
	a.pending[id] = [2]uint32{uint32(off), uint32(len(enc))}
	a.pendLive += len(enc)
}

func (a *applier) dropPending(id uint64) bool {
	loc, ok := a.pending[id]
	if !ok {
		return false
	}
	delete(a.pending, id)
	a.pendLive -= int(loc[1])
	if len(a.pending) == 0 {
		a.pendBuf = a.pendBuf[:0]
		a.pendLive = 0
	} else if len(a.pendBuf) > 1<<20 && a.pendLive*4 < len(a.pendBuf) {
		a.compactPending()
	}
	return true
}

func (a *applier) compactPending() {
	nb := make([]byte, 0, a.pendLive*2)
	for id, loc := range a.pending {
		off := len(nb)
		nb = append(nb, a.pendBuf[loc[0]:loc[0]+loc[1]]...)
		a.pending[id] = [2]uint32{uint32(off), loc[1]}
	}
	a.pendBuf = nb
}

// rangePending calls fn with the stored encoding of every in-flight
// message, in id order: messages of one sender get increasing ids, so
// restoring in id order keeps each sender's order per address.
func (a *applier) rangePending(fn func(enc []byte) bool) {
	ids := make([]uint64, 0, len(a.pending))
	for id := range a.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		loc := a.pending[id]
		if !fn(a.pendBuf[loc[0] : loc[0]+loc[1]]) {
			return
		}
	}
}

// catchUp applies every durable record from a.pos on and commits. It
// returns how many records it applied.
func (a *applier) catchUp() (int, error) {
	if a.rd == nil {
		rd, err := a.log.NewReader(a.pos)
		if err != nil {
			return 0, err
		}
		a.rd = rd
	}
	n := 0
	a.egressW = false
	for {
		_, end, rec, err := a.rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if err := a.apply(rec); err != nil {
			return n, fmt.Errorf("engine: apply record ending at log position %d: %w", end, err)
		}
		a.pos = end
		n++
		if a.pendingOps() >= 4096*len(a.parts) {
			if err := a.commit(); err != nil {
				return n, err
			}
		}
	}
	if err := a.commit(); err != nil {
		return n, err
	}
	a.records.Add(uint64(n))
	return n, nil
}

// startCommitters starts one goroutine per state batch but the first,
// which commit then signals instead of committing that batch itself.
// Without them (before, or after stopCommitters) commit commits every
// batch on its own goroutine.
func (a *applier) startCommitters() {
	if a.work != nil || len(a.parts) == 1 {
		return
	}
	for i := 1; i < len(a.parts); i++ {
		ch := make(chan struct{})
		a.work = append(a.work, ch)
		go func() {
			for range ch {
				a.errs[i] = a.parts[i].Commit()
				a.wg.Done()
			}
		}()
	}
}

// stopCommitters ends the committer goroutines.
func (a *applier) stopCommitters() {
	for _, ch := range a.work {
		close(ch)
	}
	a.work = nil
}

// commit commits the main batch and the state batches, the latter in
// parallel when committers run, and publishes the position once all are in.
// It allocates nothing.
func (a *applier) commit() error {
	for i := 1; i < len(a.parts); i++ {
		switch {
		case a.parts[i].Len() == 0:
		case a.work != nil:
			a.wg.Add(1)
			a.work[i-1] <- struct{}{}
		default:
			a.errs[i] = a.parts[i].Commit()
		}
	}
	a.errs[0] = a.parts[0].Commit()
	mainErr := a.batch.Commit()
	a.wg.Wait()
	for _, err := range a.errs {
		mainErr = cmp.Or(mainErr, err)
	}
	if mainErr != nil {
		return fmt.Errorf("engine: store commit: %w", mainErr)
	}
	for i, b := range a.parts {
		b.Reset()
		a.errs[i] = nil
	}
	a.batch.Reset()
	a.applied.Store(a.pos)
	return nil
}

func (a *applier) apply(rec []byte) error {
	r := &a.rec
	if err := format.DecodeRecord(rec, r); err != nil {
		return err
	}
	h, ok := format.HashRaw(r.TargetRaw)
	if !ok {
		return fmt.Errorf("%w: record target", format.ErrCorrupt)
	}
	kg := format.KeyGroup(h)
	b := a.batch
	sb := a.stateBatch(kg)
	if a.cl != nil { // cluster mode: everything goes to the record's partition
		b = a.cl.batch(kg)
		sb = b
	}
	for _, id := range r.Consumed {
		if a.dropPending(id) {
			continue
		}
		if _, ok := a.timers[id]; ok {
			delete(a.timers, id)
			b.DeleteTimer(id)
		}
	}
	for i := range r.States {
		s := &r.States[i]
		switch s.Op {
		case format.OpSet:
			sb.SetState(kg, r.TargetRaw, s.Name, s.WrittenAt, s.Value)
		case format.OpDelete:
			sb.DeleteState(kg, r.TargetRaw, s.Name)
		case format.OpMapSet:
			sb.SetMapEntry(kg, r.TargetRaw, s.Name, s.Key, s.Value)
		case format.OpMapDelete:
			sb.DeleteMapEntry(kg, r.TargetRaw, s.Name, s.Key)
		case format.OpMapClear:
			sb.ClearMap(kg, r.TargetRaw, s.Name)
		}
	}
	for i := range r.Messages {
		m := &r.Messages[i]
		a.msgBuf = format.AppendStoredMessage(a.msgBuf[:0], m.ID, m.FireAt, r.TargetRaw, m.TargetRaw, m.Type, m.Payload, m.ReplyTo, m.Token, m.Trace)
		if m.FireAt == 0 && a.cl != nil {
			a.cl.send(m.TargetRaw, m.ID, a.msgBuf)
		} else if m.FireAt == 0 {
			a.addPending(m.ID, a.msgBuf)
		} else {
			a.timers[m.ID] = struct{}{}
			b.PutTimer(m.ID, a.msgBuf)
		}
	}
	for _, id := range r.Cancels {
		if _, ok := a.timers[id]; ok {
			delete(a.timers, id)
			b.DeleteTimer(id)
		}
	}
	for i := range r.Egress {
		eg := &r.Egress[i]
		if a.cl != nil {
			a.cl.egress(eg.Name, r.TargetRaw, eg.Type, eg.Payload)
			continue
		}
		next := a.egress[string(eg.Name)] // no allocation for a known name
		if next == nil {
			next = new(uint64)
			a.egress[string(eg.Name)] = next
		}
		b.PutEgress(eg.Name, *next, r.TargetRaw, eg.Type, eg.Payload)
		*next++
		a.egressW = true
	}
	for i := range r.Keys {
		k := &r.Keys[i]
		a.keyBuf = append(append(a.keyBuf[:0], r.TargetRaw...), k.Key...)
		h := keyHash(a.keyBuf)
		b.PutKey(h, k.ExpireAt, k.ID, a.keyBuf)
		if a.cl != nil {
			a.cl.expiryPartition(b, k.ExpireAt, store.ExpiryKey, h, kg)
		}
	}
	if r.HasReply {
		if a.cl == nil || r.Reply.ExpireAt != 0 { // 0: a cluster reply only shipped
			b.PutReply(r.Reply.RequestID, r.Reply.ExpireAt, r.Reply.Type, r.Reply.Payload)
		}
		if a.cl != nil {
			if r.Reply.ExpireAt != 0 {
				a.cl.expiryPartition(b, r.Reply.ExpireAt, store.ExpiryReply, r.Reply.RequestID, kg)
			}
			a.cl.reply(&r.Reply)
		}
	}
	return nil
}

// expireKeys deletes the idempotency keys and kept replies whose retention
// has passed (at each checkpoint, at most expireBatch of them).
func (a *applier) expireKeys() error {
	n, err := a.st.Expire(a.batch, a.now(), expireBatch)
	if err != nil {
		return fmt.Errorf("engine: expire idempotency keys: %w", err)
	}
	if n > 0 {
		a.logger.Debug("idempotency keys expired", "count", n)
	}
	return nil
}

const expireBatch = 100_000

// checkpoint records the in-flight messages and egress offsets at a.pos,
// makes the store durable, and lets the log drop what it covers. Call only
// between catchUp calls (everything read is committed).
func (a *applier) checkpoint() error {
	start := time.Now()
	b := a.batch
	if err := a.expireKeys(); err != nil {
		return err
	}
	b.ReplacePending()
	for id, loc := range a.pending {
		b.PutPending(id, a.pendBuf[loc[0]:loc[0]+loc[1]])
	}
	eg := make(map[string]uint64, len(a.egress))
	for k, v := range a.egress {
		eg[k] = *v
	}
	b.Set(store.MetaKey, store.EncodeMeta(store.Meta{LSN: a.pos, Egress: eg}))
	if err := b.Commit(); err != nil {
		return fmt.Errorf("engine: checkpoint commit: %w", err)
	}
	b.Reset()
	if err := a.st.Flush(); err != nil {
		return fmt.Errorf("engine: checkpoint flush: %w", err)
	}
	if err := a.log.RemoveBefore(a.pos); err != nil {
		return fmt.Errorf("engine: checkpoint log truncation: %w", err)
	}
	a.lastCheckpoint = time.Now()
	d := time.Since(start)
	a.m.checkpoint(d)
	a.logger.Info("checkpoint", "log_position", a.pos, "in_flight", len(a.pending), "timers", len(a.timers), "duration", d.String())
	return nil
}

// runApplier is the applier goroutine: it applies what becomes durable,
// tells the shards how far the store has got (their cache may evict what
// is applied), wakes egress readers, and checkpoints every
// CheckpointInterval and on request.
func (e *Engine) runApplier() {
	defer close(e.apDone)
	e.ap.startCommitters()
	defer e.ap.stopCommitters()
	if e.replayed {
		_ = e.applyOnce(true) // covers the log recovery replayed; an error stops the engine
	}
	tick := time.NewTicker(e.opts.CheckpointInterval)
	defer tick.Stop()
	watch := time.NewTicker(watchInterval)
	defer watch.Stop()
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
		case <-watch.C:
			e.checkStorage()
			continue
		case <-e.apStop:
			stopping = true
		}
		err := e.applyOnce(checkpoint)
		if reply != nil {
			reply <- err
		}
		if stopping {
			return
		}
	}
}

// applyOnce is one round of the applier: catch up with the durable log,
// publish the applied position, and checkpoint if asked. An error stops the
// engine (failed-stop) and is returned.
func (e *Engine) applyOnce(checkpoint bool) error {
	if _, err := e.ap.catchUp(); err != nil {
		e.failStop(err)
		return err
	}
	pos := e.ap.pos
	for _, s := range e.shards {
		s.SetApplied(pos)
	}
	e.evictKeys(pos)
	if e.ap.egressW {
		e.egressMu.Lock()
		close(e.egressCh)
		e.egressCh = make(chan struct{})
		e.egressMu.Unlock()
	}
	if !checkpoint {
		return nil
	}
	e.checkStorage()
	if err := e.Err(); err != nil {
		return err
	}
	if e.beforeCheckpoint != nil {
		e.beforeCheckpoint() // the simulator: the log's flusher runs meanwhile
	}
	if err := e.ap.checkpoint(); err != nil {
		e.failStop(err)
		return err
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
