package kafka

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
)

// Ingress consumes the topics of one io.statefun.kafka.v1/ingress into
// the engine, exactly once (see doc.go).
type Ingress struct {
	spec   IngressSpec
	eng    *engine.Engine
	log    *slog.Logger
	m      *Metrics
	opts   Options
	routes map[string]*IngressTopic
	known  func(FunctionType) bool
	maxMsg int
	// batchMax bounds the records of one SendBatch: the options' bound,
	// lowered so that a batch fits a quarter of a shard's mailbox.
	batchMax int

	cl  *kgo.Client
	adm *kadm.Client
	// ready is closed once cl and adm are set (the client's callbacks may
	// run before NewClient returns).
	ready chan struct{}

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	// sendCtx bounds the engine sends; it ends only when Close gives up
	// waiting for them.
	sendCtx    context.Context
	sendCancel context.CancelFunc

	mu    sync.Mutex
	parts map[TopicPartition]*partition
	// flushMu serialises position records and group commits.
	flushMu   sync.Mutex
	abandoned atomic.Bool // tests: stopped as by a crash

	// pendingRecs and pendingBytes count the records polled and not yet
	// durable in the engine (all partitions); room is signalled when
	// they go down.
	pendingRecs, pendingBytes atomic.Int64
	room                      chan struct{}

	wg       sync.WaitGroup
	closeOne sync.Once
}

// partition is one assigned partition: the records fetched and not yet
// handed to the engine, and its worker, which hands them over one batch at
// a time (so a batch is admitted only after the previous one is durable:
// order per partition, hence per key, is kept).
type partition struct {
	in *Ingress
	tp TopicPartition

	mu      sync.Mutex
	pending []*kgo.Record
	bytes   int64 // of pending
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	// acked is the next offset after the records whose messages are
	// durable (every record before it); recorded is the position made
	// durable in the engine, committed the one committed to the group.
	acked     atomic.Int64
	recorded  int64 // under in.flushMu
	committed int64 // under in.flushMu
	hwm       atomic.Int64

	outs []engine.Outgoing // the worker's scratch
}

func newIngress(spec IngressSpec, eng *engine.Engine, opts Options, m *Metrics, known func(FunctionType) bool) (*Ingress, error) {
	in := &Ingress{spec: spec, eng: eng, log: opts.Logger.With("ingress", spec.ID), m: m, opts: opts,
		routes: map[string]*IngressTopic{}, known: known, maxMsg: eng.Options().MaxMessageBytes,
		parts: map[TopicPartition]*partition{}, room: make(chan struct{}, 1), ready: make(chan struct{})}
	var topics []string
	maxTargets := 1
	for i := range spec.Topics {
		maxTargets = max(maxTargets, len(spec.Topics[i].Targets))
	}
	in.batchMax = max(1, min(opts.BatchRecords, eng.Options().MailboxCapacity/4/maxTargets))
	for i := range spec.Topics {
		t := &spec.Topics[i]
		in.routes[t.Topic] = t
		topics = append(topics, t.Topic)
		for _, ft := range t.Targets {
			if !known(ft) {
				in.log.Warn("target function type is not registered: its records go to dead-letters", "topic", t.Topic, "target", ft.String())
			}
		}
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.sendCtx, in.sendCancel = context.WithCancel(context.Background())
	reset := kgo.NewOffset().AtEnd()
	if spec.ResetEarliest {
		reset = kgo.NewOffset().AtStart()
	}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(spec.Brokers...),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(reset),
		kgo.AdjustFetchOffsetsFn(in.adjust),
		kgo.OnPartitionsRevoked(in.revoked),
		kgo.OnPartitionsLost(in.lost),
		kgo.WithLogger(kgoLogger{in.log}),
	}
	kopts = append(kopts, spec.Client.Opts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: ingress %s: %w", spec.ID, err)
	}
	in.cl, in.adm = cl, kadm.NewClient(cl)
	close(in.ready)
	in.wg.Add(2)
	go in.poll()
	go in.flushLoop()
	return in, nil
}

// adjust decides where each newly assigned partition starts: at the
// engine's durable position if it has one, otherwise at the startup
// position, which is then recorded durably before anything is consumed
// (so that a restart resumes there, not at a later "latest").
func (in *Ingress) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	select {
	case <-in.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	type need struct {
		tp   TopicPartition
		kind string // "start", "end", "date"
	}
	var needs []need
	starts := map[TopicPartition]int64{}
	for topic, ps := range offsets {
		for part, off := range ps {
			tp := TopicPartition{Topic: topic, Partition: part}
			committed := off.EpochOffset().Offset
			pos, ok, err := readPosition(ctx, in.eng, in.spec.ID, tp)
			if err != nil {
				return nil, err
			}
			if ok {
				if committed > pos {
					in.log.Info("the group committed past the engine's position: another member consumed meanwhile; starting at the group's offset",
						"partition", tp.String(), "engine_position", pos, "group_offset", committed)
					pos = committed
				}
				starts[tp] = pos
				continue
			}
			resetKind := "end"
			if in.spec.ResetEarliest {
				resetKind = "start"
			}
			switch in.spec.Startup {
			case StartGroupOffsets:
				if committed >= 0 {
					starts[tp] = committed
				} else {
					needs = append(needs, need{tp, resetKind})
				}
			case StartEarliest:
				needs = append(needs, need{tp, "start"})
			case StartLatest:
				needs = append(needs, need{tp, "end"})
			case StartSpecificOffsets:
				if o, ok := in.spec.SpecificOffsets[tp]; ok {
					starts[tp] = o
				} else if committed >= 0 {
					starts[tp] = committed
				} else {
					needs = append(needs, need{tp, resetKind})
				}
			case StartDate:
				needs = append(needs, need{tp, "date"})
			}
		}
	}
	if len(needs) > 0 {
		lists := map[string]kadm.ListedOffsets{}
		for _, n := range needs {
			l, ok := lists[n.kind]
			if !ok {
				var err error
				topics := make([]string, 0, len(offsets))
				for t := range offsets {
					topics = append(topics, t)
				}
				switch n.kind {
				case "start":
					l, err = in.adm.ListStartOffsets(ctx, topics...)
				case "end":
					l, err = in.adm.ListEndOffsets(ctx, topics...)
				case "date":
					l, err = in.adm.ListOffsetsAfterMilli(ctx, in.spec.StartDate.UnixMilli(), topics...)
				}
				if err != nil {
					return nil, fmt.Errorf("kafka: ingress %s: list offsets: %w", in.spec.ID, err)
				}
				lists[n.kind] = l
			}
			lo, ok := l.Lookup(n.tp.Topic, n.tp.Partition)
			if !ok || lo.Err != nil {
				return nil, fmt.Errorf("kafka: ingress %s: list offsets of %s: %v", in.spec.ID, n.tp, lo.Err)
			}
			o := lo.Offset
			if o < 0 && n.kind == "date" { // no record at or after the date: the end
				end, err := in.adm.ListEndOffsets(ctx, n.tp.Topic)
				if err != nil {
					return nil, err
				}
				e, _ := end.Lookup(n.tp.Topic, n.tp.Partition)
				o = e.Offset
			}
			if o < 0 {
				o = 0
			}
			starts[n.tp] = o
		}
		// Record the resolved start durably before consuming.
		var msgs []engine.Outgoing
		for _, n := range needs {
			msgs = append(msgs, positionMsg(in.spec.ID, n.tp, starts[n.tp]))
		}
		if err := in.sendRetry(ctx, msgs); err != nil {
			return nil, fmt.Errorf("kafka: ingress %s: record start positions: %w", in.spec.ID, err)
		}
	}
	out := make(map[string]map[int32]kgo.Offset, len(offsets))
	for tp, start := range starts {
		if out[tp.Topic] == nil {
			out[tp.Topic] = map[int32]kgo.Offset{}
		}
		out[tp.Topic][tp.Partition] = kgo.NewOffset().At(start)
		in.startPartition(tp, start)
		in.log.Info("partition assigned", "partition", tp.String(), "start", start)
	}
	return out, nil
}

func (in *Ingress) startPartition(tp TopicPartition, start int64) {
	p := &partition{in: in, tp: tp, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.acked.Store(start)
	p.recorded, p.committed = start, -1
	p.hwm.Store(-1)
	in.mu.Lock()
	if in.ctx.Err() != nil { // closing
		in.mu.Unlock()
		return
	}
	old := in.parts[tp]
	in.parts[tp] = p
	in.mu.Unlock()
	if old != nil {
		old.halt()
	}
	in.wg.Add(1)
	go p.run()
}

func (in *Ingress) revoked(ctx context.Context, _ *kgo.Client, ps map[string][]int32) {
	in.release(ctx, ps, true)
}

func (in *Ingress) lost(ctx context.Context, _ *kgo.Client, ps map[string][]int32) {
	in.release(ctx, ps, false)
}

// release stops the workers of partitions taken away, records their
// positions and, for a revocation, commits them for the next owner.
func (in *Ingress) release(ctx context.Context, ps map[string][]int32, commit bool) {
	var gone []*partition
	in.mu.Lock()
	for topic, parts := range ps {
		for _, part := range parts {
			tp := TopicPartition{Topic: topic, Partition: part}
			if p := in.parts[tp]; p != nil {
				delete(in.parts, tp)
				gone = append(gone, p)
			}
		}
	}
	in.mu.Unlock()
	for _, p := range gone {
		p.halt()
	}
	if len(gone) > 0 {
		in.flush(ctx, gone, commit)
		for _, p := range gone {
			in.m.lag.DeleteLabelValues(in.spec.ID, p.tp.Topic, strconv.Itoa(int(p.tp.Partition)))
			in.log.Info("partition released", "partition", p.tp.String(), "position", p.acked.Load(), "committed", commit)
		}
	}
}

// took releases n records of b bytes from the pending bound.
func (in *Ingress) took(n, b int64) {
	in.pendingRecs.Add(-n)
	in.pendingBytes.Add(-b)
	select {
	case in.room <- struct{}{}:
	default:
	}
}

// full reports whether the records fetched and not yet durable in the
// engine reached the bound.
func (in *Ingress) full() bool {
	return in.pendingRecs.Load() >= int64(in.opts.MaxPendingRecords) || in.pendingBytes.Load() >= in.opts.MaxPendingBytes
}

func (in *Ingress) poll() {
	defer in.wg.Done()
	for {
		if in.full() {
			// Backpressure: stop polling, so that the client stops
			// fetching (it holds at most one fetch response per broker
			// that is not polled); resume when the engine took records.
			in.m.pauses.WithLabelValues(in.spec.ID).Inc()
			for in.full() {
				select {
				case <-in.room:
				case <-in.ctx.Done():
					return
				}
			}
		}
		fs := in.cl.PollRecords(in.ctx, in.spec.Client.MaxPollRecords)
		if in.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			in.m.fetchErrors.WithLabelValues(in.spec.ID, t).Inc()
			in.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			tp := TopicPartition{Topic: fp.Topic, Partition: fp.Partition}
			in.mu.Lock()
			p := in.parts[tp]
			in.mu.Unlock()
			if p == nil {
				return // revoked meanwhile: the next owner reads them again
			}
			if fp.HighWatermark >= 0 {
				p.hwm.Store(fp.HighWatermark)
			}
			if len(fp.Records) > 0 {
				p.push(fp.Records)
			}
		})
	}
}

func (p *partition) push(recs []*kgo.Record) {
	var b int64
	for _, r := range recs {
		b += int64(len(r.Key) + len(r.Value))
	}
	p.mu.Lock()
	p.pending = append(p.pending, recs...)
	p.bytes += b
	p.mu.Unlock()
	p.in.pendingRecs.Add(int64(len(recs)))
	p.in.pendingBytes.Add(b)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// halt stops the worker and waits for it: a batch being admitted is given
// up (nothing of it was accepted); one accepted is waited for.
func (p *partition) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	n, b := len(p.pending), p.bytes
	p.pending, p.bytes = nil, 0
	p.mu.Unlock()
	p.in.took(int64(n), b)
}

func (p *partition) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func (p *partition) run() {
	defer p.in.wg.Done()
	defer close(p.done)
	batchMax := p.in.batchMax
	for {
		p.mu.Lock()
		for len(p.pending) == 0 {
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-p.stop:
				return
			}
			p.mu.Lock()
		}
		n := min(len(p.pending), batchMax)
		batch := make([]*kgo.Record, n)
		copy(batch, p.pending)
		rest := copy(p.pending, p.pending[n:])
		clear(p.pending[rest:])
		p.pending = p.pending[:rest]
		var b int64
		for _, r := range batch {
			b += int64(len(r.Key) + len(r.Value))
		}
		p.bytes -= b
		p.mu.Unlock()
		ok := !p.stopped() && p.deliver(batch)
		p.in.took(int64(n), b)
		if !ok {
			return
		}
		p.acked.Store(batch[n-1].Offset + 1)
		p.in.m.consumed.WithLabelValues(p.in.spec.ID, p.tp.Topic).Add(float64(n))
		if h := p.hwm.Load(); h >= 0 {
			p.in.m.lag.WithLabelValues(p.in.spec.ID, p.tp.Topic, strconv.Itoa(int(p.tp.Partition))).Set(float64(max(0, h-batch[n-1].Offset-1)))
		}
	}
}

// deliver hands the messages of batch to the engine and returns once they
// are durable (true), or false when the partition stops or the engine
// cannot take them (closed, failed).
func (p *partition) deliver(batch []*kgo.Record) bool {
	p.outs = p.outs[:0]
	for _, r := range batch {
		p.outs = p.in.messages(p.outs, p.tp, r, "")
	}
	err := p.send(p.outs)
	if err == nil {
		return true
	}
	if !refused(err) {
		p.in.log.Debug("batch not delivered", "partition", p.tp.String(), "err", err)
		return false
	}
	// A message was refused (a reason this package did not foresee):
	// deliver record by record, dead-lettering the ones refused.
	for _, r := range batch {
		outs := p.in.messages(nil, p.tp, r, "")
		err := p.send(outs)
		if err != nil && refused(err) {
			outs = p.in.messages(nil, p.tp, r, err.Error())
			err = p.send(outs)
		}
		if err != nil {
			return false
		}
	}
	return true
}

// refused reports an error that says a message was bad, not that the
// engine could not take it now.
func refused(err error) bool {
	for _, e := range []error{engine.ErrBadAddress, engine.ErrBadMessage, engine.ErrTooLarge, engine.ErrUnknownType, engine.ErrBadKey} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// send is SendBatch, retried while the engine is overloaded (polling
// stops meanwhile once the pending bound is reached).
func (p *partition) send(outs []engine.Outgoing) error {
	if len(outs) == 0 {
		return nil
	}
	return p.in.sendUntil(p.in.sendCtx, p.stop, outs)
}

func (in *Ingress) sendRetry(ctx context.Context, outs []engine.Outgoing) error {
	return in.sendUntil(ctx, nil, outs)
}

func (in *Ingress) sendUntil(ctx context.Context, stop <-chan struct{}, outs []engine.Outgoing) error {
	backoff := time.Millisecond
	for {
		err := in.eng.SendBatch(ctx, outs)
		if !errors.Is(err, engine.ErrOverloaded) {
			return err
		}
		in.m.overloaded.WithLabelValues(in.spec.ID).Inc()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			return err
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// messages appends the messages of one record: one per target, or a dead
// letter. fail, when set, is why the engine refused the record's messages.
func (in *Ingress) messages(dst []engine.Outgoing, tp TopicPartition, r *kgo.Record, fail string) []engine.Outgoing {
	route := in.routes[r.Topic]
	reason := fail
	switch {
	case reason != "":
	case route == nil:
		reason = "topic is not routed by this ingress"
	case len(r.Key) == 0:
		reason = "the record has no key (the key is the id of the target instance)"
	case !utf8.Valid(r.Key):
		reason = "the record key is not UTF-8 text"
	case len(r.Key) > 1024:
		reason = fmt.Sprintf("the record key has %d bytes; an instance id has at most 1024", len(r.Key))
	case len(r.Value) > in.maxMsg:
		reason = fmt.Sprintf("the record value has %d bytes; the engine's message limit is %d", len(r.Value), in.maxMsg)
	}
	if reason != "" {
		target, typ := "", ""
		if route != nil {
			typ = route.ValueType
		}
		return append(dst, in.deadLetter(tp, r, target, typ, reason, 0))
	}
	id := string(r.Key)
	for i, t := range route.Targets {
		if !in.known(t) {
			dst = append(dst, in.deadLetter(tp, r, t.String()+"/"+id, route.ValueType,
				fmt.Sprintf("%v: %s is not registered", engine.ErrUnknownType, t), i))
			continue
		}
		dst = append(dst, engine.Outgoing{
			To:      engine.Address{Namespace: t.Namespace, Type: t.Type, ID: id},
			Message: engine.Message{Type: route.ValueType, Value: r.Value},
			Key:     recordKey(in.spec.ID, tp, r.Offset),
		})
	}
	return dst
}

func (in *Ingress) deadLetter(tp TopicPartition, r *kgo.Record, target, typ, reason string, i int) engine.Outgoing {
	in.m.deadLetters.WithLabelValues(in.spec.ID, tp.Topic).Inc()
	in.log.Warn("record dead-lettered", "partition", tp.String(), "offset", r.Offset, "reason", reason)
	part := tp.Partition
	d := deadLetter{Target: target, Type: typ,
		Error: fmt.Sprintf("kafka ingress %s: topic %s partition %d offset %d: %s", in.spec.ID, tp.Topic, tp.Partition, r.Offset, reason),
		Kafka: deadLetterFrom{Ingress: in.spec.ID, Topic: tp.Topic, Partition: &part, Offset: r.Offset}}
	if len(r.Key) > 0 {
		d.Kafka.KeyB64 = base64.StdEncoding.EncodeToString(r.Key)
	}
	key := recordKey(in.spec.ID, tp, r.Offset) + "/dead-letter/" + strconv.Itoa(i)
	if len(key) > engine.MaxKeyBytes {
		key = recordKey(in.spec.ID+"/dead-letter/"+strconv.Itoa(i), tp, r.Offset)
	}
	return deadLetterMsg(in.spec.ID, d, r.Value, in.maxMsg, key)
}

func (in *Ingress) flushLoop() {
	defer in.wg.Done()
	t := time.NewTicker(in.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
		in.mu.Lock()
		ps := make([]*partition, 0, len(in.parts))
		for _, p := range in.parts {
			ps = append(ps, p)
		}
		in.mu.Unlock()
		in.flush(in.ctx, ps, true)
	}
}

// flush records the acknowledged positions of ps durably in the engine
// (then a restart resumes there) and commits them to the group (for
// monitoring, group-offsets start-up and the next owner of a partition).
func (in *Ingress) flush(ctx context.Context, ps []*partition, commit bool) {
	in.flushMu.Lock()
	defer in.flushMu.Unlock()
	if in.abandoned.Load() {
		return
	}
	var msgs []engine.Outgoing
	var moved []*partition
	for _, p := range ps {
		if a := p.acked.Load(); a != p.recorded {
			msgs = append(msgs, positionMsg(in.spec.ID, p.tp, a))
			moved = append(moved, p)
		}
	}
	if len(msgs) > 0 {
		if err := in.sendRetry(in.sendCtx, msgs); err != nil {
			in.log.Warn("cannot record the consumed positions (the records will be read again after a restart and not applied twice)", "err", err)
			return
		}
		for i, p := range moved {
			a, _ := msgs[i].Message.AsInt64()
			p.recorded = a
		}
	}
	if !commit {
		return
	}
	offs := map[string]map[int32]kgo.EpochOffset{}
	var commits []*partition
	for _, p := range ps {
		if p.recorded != p.committed {
			if offs[p.tp.Topic] == nil {
				offs[p.tp.Topic] = map[int32]kgo.EpochOffset{}
			}
			offs[p.tp.Topic][p.tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: p.recorded}
			commits = append(commits, p)
		}
	}
	if len(commits) == 0 {
		return
	}
	var cerr error
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in.cl.CommitOffsetsSync(cctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, pt := range t.Partitions {
				if e := kerr.ErrorForCode(pt.ErrorCode); e != nil && cerr == nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, pt.Partition, e)
				}
			}
		}
	})
	if cerr != nil {
		in.m.commitErrors.WithLabelValues(in.spec.ID).Inc()
		in.log.Debug("group offset commit failed (monitoring only; the engine's positions are durable)", "err", cerr)
		return
	}
	for _, p := range commits {
		p.committed = p.recorded
	}
}

// Close stops consuming: it waits for the batches the engine accepted
// (up to ctx), records the positions, commits them and leaves the group.
// Call it before closing the engine.
func (in *Ingress) Close(ctx context.Context) {
	in.closeOne.Do(func() {
		in.cancel()
		stopSends := context.AfterFunc(ctx, in.sendCancel)
		defer stopSends()
		in.mu.Lock()
		ps := make([]*partition, 0, len(in.parts))
		for _, p := range in.parts {
			ps = append(ps, p)
		}
		in.parts = map[TopicPartition]*partition{}
		in.mu.Unlock()
		for _, p := range ps {
			p.halt()
		}
		in.flush(ctx, ps, true)
		in.cl.Close()
		in.mu.Lock()
		for _, p := range in.parts { // assigned while closing
			close(p.stop)
		}
		in.mu.Unlock()
		in.wg.Wait()
		in.sendCancel()
	})
}

// abandon stops the ingress as a crash would: nothing more is recorded or
// committed (tests).
func (in *Ingress) abandon() {
	in.closeOne.Do(func() {
		in.cancel()
		in.abandoned.Store(true) // no flush after this
		in.sendCancel()
		in.mu.Lock()
		ps := make([]*partition, 0, len(in.parts))
		for _, p := range in.parts {
			ps = append(ps, p)
		}
		in.parts = map[TopicPartition]*partition{}
		in.mu.Unlock()
		for _, p := range ps {
			p.halt()
		}
		in.cl.Close()
		in.wg.Wait()
	})
}
