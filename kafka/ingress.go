package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

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

// Close stops consuming: it waits for the batches the engine accepted
// (up to ctx), records the positions, commits them and leaves the group.
// Call it before closing the engine.
func (in *Ingress) Close(ctx context.Context) {
	in.closeOne.Do(func() {
		in.cancel()
		stopSends := context.AfterFunc(ctx, in.sendCancel)
		defer stopSends()
		ps := in.takePartitions()
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
		for _, p := range in.takePartitions() {
			p.halt()
		}
		in.cl.Close()
		in.wg.Wait()
	})
}

// partitions returns the assigned partitions.
func (in *Ingress) partitions() []*partition {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Collect(maps.Values(in.parts))
}

// takePartitions returns the assigned partitions and forgets them.
func (in *Ingress) takePartitions() []*partition {
	in.mu.Lock()
	defer in.mu.Unlock()
	ps := slices.Collect(maps.Values(in.parts))
	in.parts = map[TopicPartition]*partition{}
	return ps
}
