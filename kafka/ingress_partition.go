package kafka

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

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
