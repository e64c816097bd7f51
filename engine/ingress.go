package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/shard"
)

// Ingress: every way in (Send, SendAsync, SendBatch, Request) goes through
// enter (refused once closing or failed), validation, an id, and a push
// into the owning shard's mailbox, then leaves before it waits for the
// outcome: Close waits for pushes (nothing is pushed after its drain) but
// not for acknowledgements or replies.

// Errors of ingress calls that were accepted but could not tell the
// outcome.
var (
	// ErrInDoubt: the message was accepted, and the call ended (its context,
	// or the engine closing) before the message's consuming invocation was
	// known to be durable. It may be applied, or not yet (a crash may then
	// lose it): send it again only with an idempotency key.
	ErrInDoubt = errors.New("engine: accepted, outcome not known yet")
	// ErrReplyUnavailable: the request's message was processed (its
	// consuming invocation is durable) but its reply was not released
	// before the engine closed or the wait ran out. Do not send it again
	// without an idempotency key.
	ErrReplyUnavailable = errors.New("engine: processed, reply unavailable")
)

// enter admits one ingress call; e.inflight.Done ends it.
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

// admission is one admitted ingress call; leave is safe to call twice.
type admission struct {
	e    *Engine
	left bool
}

func (a *admission) leave() {
	if !a.left {
		a.left = true
		a.e.inflight.Done()
	}
}

// validate checks a message from ingress: its shape, its function type,
// and that the type accepts its message type from ingress.
func (e *Engine) validate(to Address, msg Message) error {
	if err := e.validateShape(to, msg); err != nil {
		return err
	}
	return e.reg.checkIngress(to, msg.Type) // unknown function type or refused message type
}

// validateShape checks what every message must be, whoever sends it:
// address, type name, size and a registered function type.
func (e *Engine) validateShape(to Address, msg Message) error {
	if err := checkAddress(to); err != nil {
		return err
	}
	if msg.Type == "" {
		return fmt.Errorf("%w: the message has no type name", ErrBadMessage)
	}
	if msg.Type == repairType {
		return errReserved // see validateInternal (repair.go)
	}
	if len(msg.Value) > e.opts.MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg.Value), e.opts.MaxMessageBytes)
	}
	if e.reg.lookup(to.Namespace, to.Type) == nil {
		return fmt.Errorf("%w: %s/%s is not registered", ErrUnknownType, to.Namespace, to.Type)
	}
	return nil
}

// checkAddress checks the shape of an address.
func checkAddress(to Address) error {
	if to.Namespace == "" || to.Type == "" || to.ID == "" {
		return fmt.Errorf("%w: %q: namespace, type and id must all be non-empty", ErrBadAddress, to.String())
	}
	if len(to.Namespace) > 255 || len(to.Type) > 255 || len(to.ID) > 1024 {
		return fmt.Errorf("%w: %q: namespace and type at most 255 bytes, id at most 1024", ErrBadAddress, to.String())
	}
	return nil
}

// newID gives an ingress message its id; running out fails the engine.
func (e *Engine) newID() (uint64, error) {
	id, err := e.ids.one()
	if err != nil {
		e.failStop(err)
	}
	return id, err
}

// push hands env to its shard's mailbox.
func (e *Engine) push(env *format.Envelope) error {
	s := e.shardFor(env.Target)
	if err := e.pressure(s); err != nil {
		return err
	}
	if !s.Mailbox().Push(env) {
		e.metrics.refused("mailbox")
		return e.overloadErr[s.Index()]
	}
	s.AddIngress(1)
	return nil
}

// submit admits, validates and pushes one message.
func (e *Engine) submit(to Address, msg Message, ack *format.Ack) (uint64, error) {
	if err := e.enter(); err != nil {
		return 0, err
	}
	defer e.inflight.Done()
	if err := e.validate(to, msg); err != nil {
		return 0, err
	}
	id, err := e.newID()
	if err != nil {
		return 0, err
	}
	env := format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, Ack: ack}
	return id, e.push(&env)
}

// await waits for ack; what names the wait in an ErrInDoubt (the send to
// an address, or a batch when to is zero), built only then.
func await(ctx context.Context, ack *format.Ack, to Address) error {
	select {
	case <-ack.Done():
		if err := ack.Err(); err != nil {
			return ackError(err)
		}
		return nil
	case <-ctx.Done():
		return inDoubt(to, ctx.Err())
	}
}

// inDoubt is the error of a wait cut short before the outcome was known.
func inDoubt(to Address, cause error) error {
	what := "batch"
	if !to.IsZero() {
		what = "send " + to.String()
	}
	return fmt.Errorf("%w: %s: %w", ErrInDoubt, what, cause)
}

func sendOpts(opts []SendOption) sendOptions {
	if len(opts) == 0 {
		return sendOptions{} // no allocation on the common path
	}
	o := new(sendOptions)
	for _, f := range opts {
		f(o)
	}
	return *o
}

// Send accepts one message and returns once the invocation that consumed
// it is durable. The returned id identifies the message. With an
// IdempotencyKey, a message already sent with that key to that address is
// not applied again: Send answers with the first one's id (waiting for its
// outcome if it is still in flight).
func (e *Engine) Send(ctx context.Context, to Address, msg Message, opts ...SendOption) (uint64, error) {
	if o := sendOpts(opts); o.key != "" {
		return e.sendKeyed(ctx, to, msg, o.key)
	}
	ack := format.GetAck(1)
	id, err := e.submit(to, msg, ack)
	if err != nil {
		format.PutAck(ack) // never handed to a shard
		return 0, err
	}
	select {
	case <-ack.Done():
		err := ack.Err()
		format.PutAck(ack) // released and read: nothing refers to it
		if err != nil {
			return id, ackError(err)
		}
		return id, nil
	case <-ctx.Done():
		return id, inDoubt(to, ctx.Err()) // a shard will still release it
	}
}

func (e *Engine) sendKeyed(ctx context.Context, to Address, msg Message, key string) (uint64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := e.enter(); err != nil {
		return 0, err
	}
	adm := admission{e: e}
	defer adm.leave()
	if err := e.validate(to, msg); err != nil {
		return 0, err
	}
	ident := keyIdentity(to, key)
	out, ent, id, err := e.admitKey(ident, e.newID)
	if err != nil {
		return 0, err
	}
	adm.leave()
	switch out {
	case keyDurable, keyInMemory:
		return id, nil
	case keyPending:
		return id, waitKey(ctx, ent)
	}
	ack := format.NewAck(1)
	ack.OnDone(func(err error) { e.settleKey(ident, ent, err) })
	env := format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, Ack: ack, Key: key}
	if err := e.pushAdmitted(&env); err != nil {
		e.settleKey(ident, ent, err)
		return 0, err
	}
	return id, await(ctx, ack, to)
}

// pushAdmitted pushes a message whose call already left admission: it is
// refused if the engine closed meanwhile.
func (e *Engine) pushAdmitted(env *format.Envelope) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.inflight.Done()
	return e.push(env)
}

// SendAsync accepts one message without waiting for durability: nothing
// is acknowledged, so the caller learns nothing about its fate. For
// benchmarks and fire-and-forget producers that tolerate loss on a crash.
func (e *Engine) SendAsync(to Address, msg Message) error {
	_, err := e.submit(to, msg, nil)
	return err
}

// SendBatch accepts many messages, whole or not at all, and returns once
// all are durable. When the shards' mailboxes cannot take the whole batch
// it is refused (ErrOverloaded) and nothing is accepted. Messages with an
// idempotency key (Outgoing.Key) that was sent before are not applied
// again.
func (e *Engine) SendBatch(ctx context.Context, msgs []Outgoing) error {
	if err := e.enter(); err != nil {
		return err
	}
	adm := admission{e: e}
	defer adm.leave()
	for i := range msgs {
		if err := e.validate(msgs[i].To, msgs[i].Message); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if k := msgs[i].Key; k != "" {
			if err := checkKey(k); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
		}
	}
	b := batchAdmission{e: e}
	err := b.admit(msgs)
	b.releaseEnvs()
	if err != nil {
		return err
	}
	adm.leave()
	return b.wait(ctx)
}

// envPool recycles SendBatch's envelope slices: the mailboxes copy the
// envelopes, so a slice is free again once the batch is pushed.
var envPool = sync.Pool{New: func() any { return new([]format.Envelope) }}

// maxPooledBatch: a larger envelope slice is left to the collector.
const maxPooledBatch = 1 << 12

// batchAdmission is one SendBatch between admission and its outcome.
type batchAdmission struct {
	e       *Engine
	envs    *[]format.Envelope // from envPool, until pushed
	keyed   []batchKey         // the keyed messages sent now
	waitFor []*keyEntry        // keyed messages sent before and still in flight
	ack     *format.Ack
}

// batchKey is a keyed message of a batch: its key identity and entry.
type batchKey struct {
	ident []byte
	ent   *keyEntry
}

// releaseEnvs gives the envelope slice back to the pool.
func (b *batchAdmission) releaseEnvs() {
	if b.envs != nil && cap(*b.envs) <= maxPooledBatch {
		clear(*b.envs)
		*b.envs = (*b.envs)[:0]
		envPool.Put(b.envs)
	}
	b.envs = nil
}

// admit resolves keys, reserves room in every shard it needs and pushes
// the batch, or refuses it whole.
func (b *batchAdmission) admit(msgs []Outgoing) error {
	e := b.e
	b.envs = envPool.Get().(*[]format.Envelope)
	envs := slices.Grow((*b.envs)[:0], len(msgs))
	defer func() { *b.envs = envs }()
	for i := range msgs {
		m := &msgs[i]
		env := format.Envelope{Target: m.To, Type: m.Message.Type, Payload: m.Message.Value}
		if m.Key != "" {
			ident := keyIdentity(m.To, m.Key)
			out, en, id, err := e.admitKey(ident, e.newID)
			if err != nil {
				b.forget(err)
				return fmt.Errorf("message %d: %w", i, err)
			}
			switch out {
			case keyDurable, keyInMemory:
				continue
			case keyPending:
				b.waitFor = append(b.waitFor, en)
				continue
			}
			b.keyed = append(b.keyed, batchKey{ident, en})
			env.ID, env.Key = id, m.Key
		} else {
			id, err := e.newID()
			if err != nil {
				b.forget(err)
				return err
			}
			env.ID = id
		}
		envs = append(envs, env)
	}
	if len(envs) == 0 {
		return nil
	}
	if err := b.reserve(envs); err != nil {
		b.forget(err)
		return err
	}
	b.ack = format.NewAck(len(envs))
	for i := range envs {
		envs[i].Ack = b.ack
	}
	if len(b.keyed) > 0 {
		// The keyed messages settle with the batch's outcome.
		b.ack.OnDone(b.forget)
	}
	for i := range envs {
		s := e.shardFor(envs[i].Target)
		s.Mailbox().PushReserved(&envs[i])
		s.AddIngress(1)
	}
	return nil
}

// reserve claims room for the whole batch in every mailbox it goes to, or
// nothing.
func (b *batchAdmission) reserve(envs []format.Envelope) error {
	e := b.e
	var needs [256]int // Shards is at most 255
	var sizes [256]int64
	need, bytes := needs[:len(e.shards)], sizes[:len(e.shards)]
	for i := range envs {
		j := e.shardFor(envs[i].Target).Index()
		need[j]++
		bytes[j] += shard.EnvelopeBytes(&envs[i])
	}
	for j, n := range need {
		if n == 0 {
			continue
		}
		err := e.pressure(e.shards[j])
		if err == nil && !e.shards[j].Mailbox().Reserve(n, bytes[j]) {
			e.metrics.refused("mailbox")
			err = fmt.Errorf("%w: shard %d has no room for the %d messages (%d bytes) of this batch bound to it", ErrOverloaded, j, n, bytes[j])
		}
		if err == nil {
			continue
		}
		for k := 0; k < j; k++ {
			if need[k] > 0 {
				e.shards[k].Mailbox().Unreserve(need[k], bytes[k])
			}
		}
		return fmt.Errorf("%w; nothing of the batch was accepted", err)
	}
	return nil
}

// forget settles the keys registered for the batch: with the batch's
// outcome, or with the error that stopped it from being sent.
func (b *batchAdmission) forget(err error) {
	for _, k := range b.keyed {
		b.e.settleKey(k.ident, k.ent, err)
	}
}

func (b *batchAdmission) wait(ctx context.Context) error {
	if b.ack != nil {
		if err := await(ctx, b.ack, Address{}); err != nil {
			return err
		}
	}
	for _, ent := range b.waitFor {
		if err := waitKey(ctx, ent); err != nil {
			return err
		}
	}
	return nil
}

// Request sends msg and waits for the Reply of the chain it starts, up to
// ctx's deadline (ErrNoReply). Replies are released only once the effects
// that made them are durable. The request is known by its message's id,
// which is unique across restarts, so a reply made before a restart can
// never answer a request made after it. With an IdempotencyKey, a request
// sent before with the key is not sent again: Request waits for, or
// returns, its reply (kept durably for the retention window).
func (e *Engine) Request(ctx context.Context, to Address, msg Message, opts ...SendOption) (Message, error) {
	if o := sendOpts(opts); o.key != "" {
		return e.requestKeyed(ctx, to, msg, o.key)
	}
	id, ch, ack, err := e.startRequest(to, msg)
	if err != nil {
		return Message{}, err
	}
	defer e.requests.remove(id, ch)
	return e.awaitReply(ctx, to, ch, ack)
}

// startRequest admits, validates and pushes the message of a request whose
// id is the message's: the waiter is registered before the push. The
// caller removes the waiter (requests.remove) when it stops waiting.
func (e *Engine) startRequest(to Address, msg Message) (uint64, chan Message, *format.Ack, error) {
	if err := e.enter(); err != nil {
		return 0, nil, nil, err
	}
	defer e.inflight.Done()
	if err := e.validate(to, msg); err != nil {
		return 0, nil, nil, err
	}
	id, err := e.newID()
	if err != nil {
		return 0, nil, nil, err
	}
	ack := format.NewAck(1)
	env := format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, ReplyTo: id, Ack: ack}
	ch := e.requests.add(id)
	if err := e.push(&env); err != nil {
		e.requests.remove(id, ch)
		return 0, nil, nil, err
	}
	return id, ch, ack, nil
}

func (e *Engine) requestKeyed(ctx context.Context, to Address, msg Message, key string) (Message, error) {
	if err := checkKey(key); err != nil {
		return Message{}, err
	}
	if err := e.enter(); err != nil {
		return Message{}, err
	}
	adm := admission{e: e}
	defer adm.leave()
	if err := e.validate(to, msg); err != nil {
		return Message{}, err
	}
	ident := keyIdentity(to, key)
	out, ent, id, err := e.admitKey(ident, e.newID)
	if err != nil {
		return Message{}, err
	}
	ch := e.requests.add(id)
	defer e.requests.remove(id, ch)
	if out != keyNew {
		adm.leave()
		// Sent before: its reply is kept, or will come (the waiter is
		// registered before the look-up, so it cannot slip between).
		if r, ok, err := e.keptReply(id); err != nil || ok {
			return r, err
		}
		return e.awaitReply(ctx, to, ch, nil)
	}
	ack := format.NewAck(1)
	ack.OnDone(func(err error) { e.settleKey(ident, ent, err) })
	env := format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, ReplyTo: id | format.ReplyKeep, Ack: ack, Key: key}
	if err := e.push(&env); err != nil {
		e.settleKey(ident, ent, err)
		return Message{}, err
	}
	adm.leave()
	return e.awaitReply(ctx, to, ch, ack)
}

// awaitReply waits for a request's reply. ack (nil if unknown) tells
// whether the request's message was consumed when the reply cannot come.
func (e *Engine) awaitReply(ctx context.Context, to Address, ch chan Message, ack *format.Ack) (Message, error) {
	processed := func() bool {
		if ack == nil {
			return false
		}
		select {
		case <-ack.Done():
			return ack.Err() == nil
		default:
			return false
		}
	}
	select {
	case r, ok := <-ch:
		if ok {
			return r, nil
		}
		if processed() {
			return Message{}, fmt.Errorf("%w: %s: the engine closed before the reply was released", ErrReplyUnavailable, to)
		}
		return Message{}, fmt.Errorf("%w: %s: the engine closed before the message was processed; it was not applied", ErrClosed, to)
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			if processed() {
				return Message{}, fmt.Errorf("%w: %s: the wait was cut short (%v) after the message was processed", ErrReplyUnavailable, to, ctx.Err())
			}
			return Message{}, fmt.Errorf("%w: %s: %w", ErrInDoubt, to, ctx.Err())
		}
		if processed() {
			return Message{}, fmt.Errorf("%w: %s (the message was processed; its reply did not come in time)", ErrNoReply, to)
		}
		return Message{}, fmt.Errorf("%w: %s (the message is queued and will be processed exactly once unless the engine crashes first)", ErrNoReply, to)
	}
}
