package kafka

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
)

// Egress ships one engine egress log to Kafka (see doc.go). It runs on its
// own goroutine: Kafka being down or slow never blocks the shards; the
// egress log, on disk, is the buffer.
type Egress struct {
	spec   EgressSpec
	log    string
	eng    *engine.Engine
	lg     *slog.Logger
	m      *Metrics
	opts   Options
	maxMsg int

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// lagDone is closed when the lag measuring goroutine ends.
	lagDone chan struct{}

	// next is the next egress offset to ship: every record before it is
	// in Kafka (committed, for exactly-once).
	next atomic.Uint64
	// committed is the position committed to the egress's group
	// (at-least-once and none; exactly-once commits in each transaction).
	committed uint64
	lastTopic string
	topicIDs  map[string][16]byte
	// meta is the commit metadata naming this engine's egress log
	// ("shardfn-log:<id>"); committed offsets with other metadata belong
	// to another log (another data directory) and are ignored.
	meta string
}

func newEgress(spec EgressSpec, eng *engine.Engine, opts Options, m *Metrics) *Egress {
	e := &Egress{spec: spec, log: spec.Log(), eng: eng, lg: opts.Logger.With("egress", spec.ID), m: m, opts: opts,
		maxMsg: eng.Options().MaxMessageBytes, done: make(chan struct{}), topicIDs: map[string][16]byte{}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.lagDone = make(chan struct{})
	go e.run()
	go e.measureLag()
	return e
}

// measureLag updates the shipping lag metric every 500 ms.
func (e *Egress) measureLag() {
	defer close(e.lagDone)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	end := uint64(0)
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		end = e.updateLag(max(end, e.next.Load()))
	}
}

// Shipped returns the next egress offset to ship.
func (e *Egress) Shipped() uint64 { return e.next.Load() }

// Close stops shipping: a transaction in progress is aborted (its records
// are shipped again by the next run). At-least-once and none commit their
// position.
func (e *Egress) Close() {
	e.cancel()
	<-e.done
	<-e.lagDone
}

func (e *Egress) client() (*kgo.Client, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(e.spec.Brokers...), kgo.WithLogger(kgoLogger{e.lg}),
		kgo.ProducerLinger(time.Millisecond)}
	switch e.spec.Semantic {
	case SemanticExactlyOnce:
		opts = append(opts, kgo.TransactionalID(e.spec.TransactionalID), kgo.TransactionTimeout(e.spec.TransactionTimeout))
	case SemanticNone:
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.NoAck()))
	}
	opts = append(opts, e.spec.Client.Opts...)
	return kgo.NewClient(opts...)
}

// connect makes a client and learns the shipped position from the group.
// For exactly-once it first initialises the transactional producer, which
// fences a previous incarnation and aborts its open transaction, so the
// position read after it is final.
func (e *Egress) connect(ctx context.Context, first bool) (*kgo.Client, error) {
	cl, err := e.client()
	if err != nil {
		return nil, err
	}
	if e.meta == "" {
		id, err := e.logIdentity(ctx)
		if err != nil {
			cl.Close()
			return nil, err
		}
		e.meta = "shardfn-log:" + strconv.FormatUint(id, 16)
	}
	if e.spec.Semantic == SemanticExactlyOnce {
		if _, _, err := cl.ProducerID(ctx); err != nil {
			cl.Close()
			return nil, fmt.Errorf("init transactional producer %s: %w", e.spec.TransactionalID, err)
		}
	}
	if first || e.spec.Semantic != SemanticNone {
		next, err := e.fetchShipped(ctx, cl)
		if err != nil {
			cl.Close()
			return nil, err
		}
		e.next.Store(next)
		e.committed = next
		e.m.shipped.WithLabelValues(e.spec.ID).Set(float64(next))
	}
	return cl, nil
}

// fetchShipped reads the egress group's committed offset: the highest over
// its partitions (the position is committed against a partition of a
// topic the transaction wrote to; it only grows). It waits for pending
// transactional commits to settle (RequireStable).
func (e *Egress) fetchShipped(ctx context.Context, cl *kgo.Client) (uint64, error) {
	adm := kadm.NewClient(cl)
	for {
		resps, err := adm.FetchOffsets(kadm.RequireStable(ctx), e.spec.Group())
		if err == nil {
			var next int64
			other := false
			resps.Each(func(o kadm.OffsetResponse) {
				if o.Err != nil && err == nil {
					err = o.Err
				}
				if o.Metadata == e.meta {
					next = max(next, o.At)
				} else if o.At > 0 {
					other = true
				}
			})
			if err == nil {
				if other && next == 0 {
					e.lg.Warn("the egress group has positions of another egress log (another data directory); shipping this engine's log from its start",
						"group", e.spec.Group())
				}
				return uint64(next), nil
			}
		}
		if errors.Is(err, kerr.GroupIDNotFound) {
			return 0, nil
		}
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !errors.Is(err, kerr.CoordinatorLoadInProgress) {
			return 0, fmt.Errorf("fetch the shipped position of group %s: %w", e.spec.Group(), err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *Egress) run() {
	defer close(e.done)
	var cl *kgo.Client
	defer func() {
		if cl != nil {
			if e.spec.Semantic != SemanticExactlyOnce {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if e.spec.Semantic == SemanticAtLeastOnce {
					_ = cl.Flush(ctx)
				}
				e.commitPlain(ctx, cl)
				cancel()
			}
			cl.Close()
		}
	}()
	backoff := 50 * time.Millisecond
	first := true
	var lastWarn time.Time
	fail := func(what string, err error) {
		e.m.produceErrors.WithLabelValues(e.spec.ID).Inc()
		if time.Since(lastWarn) > 10*time.Second {
			lastWarn = time.Now()
			e.lg.Warn("kafka egress: "+what+"; retrying (the egress log keeps the records)", "err", err, "shipped", e.next.Load())
		}
		select {
		case <-e.ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	lastCommit := time.Now()
	for e.ctx.Err() == nil {
		if cl == nil {
			var err error
			cctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
			cl, err = e.connect(cctx, first)
			cancel()
			if err != nil {
				cl = nil
				if e.ctx.Err() == nil {
					fail("cannot connect", err)
				}
				continue
			}
			first = false
		}
		next := e.next.Load()
		recs, err := e.eng.ReadEgress(e.ctx, e.log, next, e.opts.EgressBatch, egressBatchBytes, 200*time.Millisecond)
		if err != nil {
			if e.ctx.Err() == nil {
				fail("cannot read the egress log", err)
			}
			continue
		}
		if e.spec.Semantic != SemanticExactlyOnce && e.committed != next && time.Since(lastCommit) > e.opts.CommitInterval {
			lastCommit = time.Now()
			e.commitPlain(e.ctx, cl)
		}
		if len(recs) == 0 {
			continue
		}
		end := recs[len(recs)-1].Offset + 1
		krecs, dls := e.convert(recs)
		if len(dls) > 0 {
			if err := sendRetry(e.ctx, e.eng, dls); err != nil {
				if e.ctx.Err() == nil {
					fail("cannot write dead letters", err)
				}
				continue
			}
		}
		if len(krecs) > 0 {
			start := time.Now()
			if err := e.ship(e.ctx, cl, krecs, end); err != nil {
				e.m.aborts.WithLabelValues(e.spec.ID).Inc()
				cl.Close()
				cl = nil // reconnect: the group's position says what was shipped
				if e.ctx.Err() == nil {
					fail("cannot ship a batch", err)
				}
				continue
			}
			e.m.commitLatency.WithLabelValues(e.spec.ID).Observe(time.Since(start).Seconds())
			for i := 0; i < len(krecs); {
				j := i + 1
				for j < len(krecs) && krecs[j].Topic == krecs[i].Topic {
					j++
				}
				e.m.produced.WithLabelValues(e.spec.ID, krecs[i].Topic).Add(float64(j - i))
				i = j
			}
			e.lastTopic = krecs[len(krecs)-1].Topic
		}
		backoff = 50 * time.Millisecond
		e.next.Store(end)
		e.m.shipped.WithLabelValues(e.spec.ID).Set(float64(end))
	}
}

// convert turns egress records into Kafka records; the ones that are not
// Kafka records become dead letters (written once: keyed by offset).
func (e *Egress) convert(recs []engine.EgressRecord) ([]*kgo.Record, []engine.Outgoing) {
	krecs := make([]*kgo.Record, 0, len(recs))
	var dls []engine.Outgoing
	for _, r := range recs {
		var rec Record
		err := fmt.Errorf("record type %q is not %s (write Kafka egress records with kafka.Record or KafkaEgressBuilder)", r.Message.Type, RecordType)
		if r.Message.Type == RecordType {
			rec, err = DecodeRecord(r.Message.Value)
		}
		if err != nil {
			e.m.deadLetters.WithLabelValues(e.spec.ID, "").Inc()
			e.lg.Warn("egress record dead-lettered", "offset", r.Offset, "err", err)
			d := deadLetter{Target: r.Source.String(), Type: r.Message.Type,
				Error: fmt.Sprintf("kafka egress %s: egress offset %d: %v", e.spec.ID, r.Offset, err),
				Kafka: deadLetterFrom{Egress: e.spec.ID, Offset: int64(r.Offset)}}
			key := "kafka-egress/" + e.spec.ID + "/" + strconv.FormatUint(r.Offset, 10)
			if len(key) > engine.MaxKeyBytes {
				key = recordKey("egress/"+e.spec.ID, TopicPartition{}, int64(r.Offset))
			}
			dls = append(dls, deadLetterMsg(e.spec.ID, d, r.Message.Value, e.maxMsg, key))
			continue
		}
		kr := &kgo.Record{Topic: rec.Topic, Value: rec.Value}
		if rec.Key != "" {
			kr.Key = []byte(rec.Key)
		}
		for _, h := range rec.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		krecs = append(krecs, kr)
	}
	return krecs, dls
}

// ship sends one batch with the egress's semantic; end is the egress
// offset after the batch.
func (e *Egress) ship(ctx context.Context, cl *kgo.Client, krecs []*kgo.Record, end uint64) error {
	switch e.spec.Semantic {
	case SemanticNone:
		for _, r := range krecs {
			cl.Produce(ctx, r, nil)
		}
		return nil
	case SemanticAtLeastOnce:
		return cl.ProduceSync(ctx, krecs...).FirstErr()
	}
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = cl.EndTransaction(actx, kgo.TryAbort)
		}
	}()
	if err := cl.ProduceSync(ctx, krecs...).FirstErr(); err != nil {
		return err
	}
	if err := e.commitInTxn(ctx, cl, krecs[0].Topic, end); err != nil {
		return err
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	committed = true
	return nil
}

// commitInTxn adds the egress position to the open transaction, as the
// offset of the egress's group on partition 0 of topic (Kafka Streams
// commits its input offsets the same way): it becomes visible exactly when
// the transaction's records do.
func (e *Egress) commitInTxn(ctx context.Context, cl *kgo.Client, topic string, end uint64) error {
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return err
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = e.spec.TransactionalID, pid, epoch, e.spec.Group()
	if err := retryConcurrent(ctx, func() error {
		resp, err := add.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}); err != nil {
		return fmt.Errorf("add offsets to transaction: %w", err)
	}
	id, err := e.topicID(ctx, cl, topic)
	if err != nil {
		return err
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = e.spec.TransactionalID, e.spec.Group(), pid, epoch
	req.Generation = -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = 0, int64(end), -1, &e.meta
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return retryConcurrent(ctx, func() error {
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return err
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return fmt.Errorf("commit the egress position in the transaction: %w", err)
				}
			}
		}
		return nil
	})
}

func (e *Egress) topicID(ctx context.Context, cl *kgo.Client, topic string) ([16]byte, error) {
	if id, ok := e.topicIDs[topic]; ok {
		return id, nil
	}
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return [16]byte{}, err
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil {
		return [16]byte{}, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	e.topicIDs[topic] = td.ID
	return td.ID, nil
}

func retryConcurrent(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, kerr.ConcurrentTransactions) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// commitPlain commits the shipped position outside transactions
// (at-least-once and none).
func (e *Egress) commitPlain(ctx context.Context, cl *kgo.Client) {
	next := e.next.Load()
	if next == e.committed || e.lastTopic == "" {
		return
	}
	id, err := e.topicID(ctx, cl, e.lastTopic)
	if err != nil {
		return
	}
	offs := kadm.Offsets{e.lastTopic: {0: {Topic: e.lastTopic, TopicID: id, Partition: 0, At: int64(next), LeaderEpoch: -1, Metadata: e.meta}}}
	resps, err := kadm.NewClient(cl).CommitOffsets(ctx, e.spec.Group(), offs)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		e.m.produceErrors.WithLabelValues(e.spec.ID).Inc()
		e.lg.Debug("cannot commit the shipped position", "err", err)
		return
	}
	e.committed = next
}

// updateLag sets the shipping lag: durable egress records not yet
// shipped, found by probing the egress log (exponential then binary
// search from seen, an offset known to exist or to be the end). It returns
// the end found.
func (e *Egress) updateLag(seen uint64) uint64 {
	has := func(off uint64) bool {
		r, err := e.eng.ReadEgress(e.ctx, e.log, off, 1, 0, 0)
		return err == nil && len(r) > 0 && r[0].Offset == off
	}
	lo := seen
	if has(lo) {
		step := uint64(1)
		for has(lo + step) {
			lo += step
			step *= 2
		}
		hi := lo + step // absent
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			if has(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		lo = hi
	}
	e.m.shipLag.WithLabelValues(e.spec.ID).Set(float64(lo - min(lo, e.next.Load())))
	return lo
}

// logIdentity returns the random identity of this engine's egress log,
// kept in the engine (made on first use): committed positions carry it.
func (e *Egress) logIdentity(ctx context.Context) (uint64, error) {
	tp := TopicPartition{Topic: "egress-log", Partition: 0}
	for i := 0; i < 2; i++ {
		v, ok, err := readPosition(ctx, e.eng, e.spec.ID, tp)
		if err != nil {
			return 0, err
		}
		if ok {
			return uint64(v), nil
		}
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		m := positionMsg(e.spec.ID, tp, int64(binary.BigEndian.Uint64(b[:])>>1))
		m.Key = "kafka-egress-log-identity"
		if err := sendRetry(ctx, e.eng, []engine.Outgoing{m}); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("kafka: egress %s: the log identity was not kept", e.spec.ID)
}

// sendRetry is SendBatch retried while the engine is overloaded.
func sendRetry(ctx context.Context, eng *engine.Engine, outs []engine.Outgoing) error {
	backoff := time.Millisecond
	for {
		err := eng.SendBatch(ctx, outs)
		if !errors.Is(err, engine.ErrOverloaded) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// egressBatchBytes bounds the records of one egress read (one Kafka
// transaction); a larger single record still ships alone.
const egressBatchBytes = 4 << 20
