package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/internal/format"
)

// Ingress: every way in (Send, SendAsync, SendBatch, Request) goes through
// enter (refused once closing or failed), validate, an id, and push into
// the owning shard's mailbox, then leaves before it waits for the outcome:
// Close waits for pushes (nothing is pushed after its drain) but not for
// acknowledgements or replies.

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

func (e *Engine) validate(to Address, msg Message) error {
	if err := checkAddress(to); err != nil {
		return err
	}
	if msg.Type == "" {
		return fmt.Errorf("%w: the message has no type name", ErrBadMessage)
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

// envelope validates msg for to and gives it an id.
func (e *Engine) envelope(to Address, msg Message, ack *format.Ack) (format.Envelope, error) {
	if err := e.validate(to, msg); err != nil {
		return format.Envelope{}, err
	}
	id, err := e.ids.one()
	if err != nil {
		e.failStop(err)
		return format.Envelope{}, err
	}
	return format.Envelope{ID: id, Target: to, Type: msg.Type, Payload: msg.Value, Ack: ack}, nil
}

// push hands env to its shard's mailbox.
func (e *Engine) push(env *format.Envelope) error {
	s := e.shardFor(env.Target)
	if !s.Mailbox().Push(env) {
		e.metrics.overloaded.Inc()
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
	env, err := e.envelope(to, msg, ack)
	if err != nil {
		return 0, err
	}
	return env.ID, e.push(&env)
}

// await waits for ack.
func await(ctx context.Context, ack *format.Ack, what string) error {
	select {
	case <-ack.Done():
		if err := ack.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailed, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine: %s: %w (the message may still be processed)", what, ctx.Err())
	}
}

// Send accepts one message and returns once the invocation that consumed
// it is durable. The returned id identifies the message.
func (e *Engine) Send(ctx context.Context, to Address, msg Message) (uint64, error) {
	ack := format.NewAck(1)
	id, err := e.submit(to, msg, ack)
	if err != nil {
		return 0, err
	}
	return id, await(ctx, ack, "send "+to.String())
}

// SendAsync accepts one message without waiting for durability: nothing
// is acknowledged, so the caller learns nothing about its fate. For
// benchmarks and fire-and-forget producers that tolerate loss on a crash.
func (e *Engine) SendAsync(to Address, msg Message) error {
	_, err := e.submit(to, msg, nil)
	return err
}

// SendBatch accepts many messages and returns once all are durable. On
// error, messages before the failing one may have been accepted (each at
// most once); none after it.
func (e *Engine) SendBatch(ctx context.Context, msgs []Outgoing) error {
	if err := e.enter(); err != nil {
		return err
	}
	left := false
	leave := func() {
		if !left {
			left = true
			e.inflight.Done()
		}
	}
	defer leave()
	for i := range msgs {
		if err := e.validate(msgs[i].To, msgs[i].Message); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	ack := format.NewAck(len(msgs))
	var pushErr error
	for i := range msgs {
		env, err := e.envelope(msgs[i].To, msgs[i].Message, ack)
		if err == nil {
			err = e.push(&env)
		}
		if err != nil {
			pushErr = fmt.Errorf("message %d: %w", i, err)
			for j := i; j < len(msgs); j++ {
				ack.Release(nil)
			}
			break
		}
	}
	leave()
	if err := await(ctx, ack, "batch"); err != nil {
		return err
	}
	return pushErr
}

// Request sends msg and waits for the Reply of the chain it starts, up to
// ctx's deadline (ErrNoReply). Replies are released only once the effects
// that made them are durable. The request is known by its message's id,
// which is unique across restarts, so a reply made before a restart can
// never answer a request made after it.
func (e *Engine) Request(ctx context.Context, to Address, msg Message) (Message, error) {
	if err := e.enter(); err != nil {
		return Message{}, err
	}
	env, err := e.envelope(to, msg, nil)
	if err != nil {
		e.inflight.Done()
		return Message{}, err
	}
	env.ReplyTo = env.ID
	ch := e.requests.add(env.ID)
	defer e.requests.remove(env.ID)
	err = e.push(&env)
	e.inflight.Done()
	if err != nil {
		return Message{}, err
	}
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
