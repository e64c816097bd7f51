package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"unicode/utf8"

	"github.com/shardfn/shardfn/internal/format"
)

// Idempotency keys. A client that did not hear an answer sends again; with
// the same key to the same address within the retention window
// (Options.IdempotencyRetention) the message is applied once and every
// send is answered with the first answer: the first message's id, or, for
// a request, its reply.
//
// Where a key lives:
//   - from admission until the store has applied the record that consumed
//     its message, in memory (keyTable): a second send with the key waits
//     for the first one's outcome and shares it;
//   - from the consuming record on, durably: the record carries the key
//     (format.RecordKey) and the applier writes it to the store, where later
//     sends (after a restart too) find it. An idempotent request's message
//     carries format.ReplyKeep in its request id, so the record that answers
//     it keeps the reply (store.KeptReply).
//
// A message whose record never became durable (a crash, a failed engine)
// leaves no key behind: sending it again applies it, once.
//
// Memory: one entry per keyed message between admission and the store
// applying its record, plus the replies of keyed requests released but not
// yet applied. Both are dropped as the applier passes them.

// ErrBadKey is wrapped by the error for an idempotency key that is empty,
// too long or not UTF-8 text.
var ErrBadKey = errors.New("engine: bad idempotency key")

// MaxKeyBytes is the longest idempotency key.
const MaxKeyBytes = 255

// SendOption modifies one Send, Request or batch message.
type SendOption func(*sendOptions)

type sendOptions struct {
	key string
}

// IdempotencyKey makes the send idempotent: the same key sent to the same
// address within the retention window is applied once, and every send of
// it is answered with the first answer.
func IdempotencyKey(key string) SendOption {
	return func(o *sendOptions) { o.key = key }
}

func checkKey(k string) error {
	if k == "" || len(k) > MaxKeyBytes || !utf8.ValidString(k) {
		return fmt.Errorf("%w: %q: want 1 to %d bytes of UTF-8 text", ErrBadKey, clipKey(k), MaxKeyBytes)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < ' ' || k[i] == 0x7f {
			return fmt.Errorf("%w: %q: control characters are not allowed", ErrBadKey, clipKey(k))
		}
	}
	return nil
}

func clipKey(k string) string {
	if len(k) > 40 {
		return k[:40] + "…"
	}
	return k
}

// keyIdentity is what a key means: the target address and the key.
func keyIdentity(to Address, key string) []byte {
	return append(format.AppendAddress(nil, to), key...)
}

// keyHash is the store's hash of an identity (FNV-1a 64; stable across
// processes, which the store's keys need).
func keyHash(identity []byte) uint64 {
	h := fnv.New64a()
	h.Write(identity)
	return h.Sum64()
}

// keyEntry is a keyed message between admission and the store.
type keyEntry struct {
	id   uint64
	done chan struct{} // closed when settled
	err  error         // the outcome, set before done is closed
	pos  uint64        // the log position durable at settlement
}

// keyTable holds the in-memory keys. Safe for concurrent use.
type keyTable struct {
	parts [16]struct {
		mu sync.Mutex
		m  map[string]*keyEntry
	}
	mu      sync.Mutex
	settled []settledKey // in settlement order, for eviction
	replies map[uint64]keptReply
}

type settledKey struct {
	identity string
	ent      *keyEntry
}

type keptReply struct {
	msg Message
	pos uint64
}

func (t *keyTable) init() {
	for i := range t.parts {
		t.parts[i].m = map[string]*keyEntry{}
	}
	t.replies = map[uint64]keptReply{}
}

// outcome of a key lookup at admission.
type keyOutcome int

const (
	keyNew      keyOutcome = iota // not known: send it (the entry is registered)
	keyPending                    // sent, not settled: wait for ent
	keyDurable                    // consumed durably: answer with id
	keyInMemory                   // settled in memory: answer with ent
)

// admitKey looks identity up and, if it is new, registers an entry with
// the id the message will carry.
func (e *Engine) admitKey(identity []byte, newID func() (uint64, error)) (keyOutcome, *keyEntry, uint64, error) {
	t := &e.keys
	p := &t.parts[keyHash(identity)%16]
	p.mu.Lock()
	defer p.mu.Unlock()
	if ent := p.m[string(identity)]; ent != nil {
		select {
		case <-ent.done:
			if ent.err == nil {
				return keyInMemory, ent, ent.id, nil
			}
			// The first send failed; a new one may go.
			delete(p.m, string(identity))
		default:
			return keyPending, ent, ent.id, nil
		}
	}
	stored, ok, err := e.st.GetKey(keyHash(identity))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("engine: read idempotency key: %w", err)
	}
	if ok && string(stored.Identity) == string(identity) && stored.ExpireAt > e.now() {
		return keyDurable, nil, stored.ID, nil
	}
	id, err := newID()
	if err != nil {
		return 0, nil, 0, err
	}
	ent := &keyEntry{id: id, done: make(chan struct{})}
	p.m[string(identity)] = ent
	return keyNew, ent, id, nil
}

// settleKey records the outcome of the first send of identity. A failure
// forgets the key, so that it may be sent again; a success keeps it in
// memory until the store has the record that carries it.
func (e *Engine) settleKey(identity []byte, ent *keyEntry, err error) {
	t := &e.keys
	ent.err = err
	ent.pos = e.wal.Durable()
	close(ent.done)
	if err != nil {
		p := &t.parts[keyHash(identity)%16]
		p.mu.Lock()
		if p.m[string(identity)] == ent {
			delete(p.m, string(identity))
		}
		p.mu.Unlock()
		return
	}
	t.mu.Lock()
	t.settled = append(t.settled, settledKey{identity: string(identity), ent: ent})
	t.mu.Unlock()
}

// waitKey waits for the first send's outcome.
func waitKey(ctx context.Context, ent *keyEntry) error {
	select {
	case <-ent.done:
		return ent.err
	case <-ctx.Done():
		return fmt.Errorf("engine: a send with the same idempotency key is in progress: %w", ctx.Err())
	}
}

// keepReply remembers the reply of an idempotent request until the store
// has it.
func (e *Engine) keepReply(id uint64, m Message) {
	t := &e.keys
	t.mu.Lock()
	t.replies[id] = keptReply{msg: m, pos: e.wal.Durable()}
	t.mu.Unlock()
}

// keptReply returns the reply of idempotent request id, from memory or the
// store.
func (e *Engine) keptReply(id uint64) (Message, bool, error) {
	t := &e.keys
	t.mu.Lock()
	r, ok := t.replies[id]
	t.mu.Unlock()
	if ok {
		return r.msg, true, nil
	}
	kr, ok, err := e.st.GetReply(id)
	if err != nil || !ok {
		return Message{}, false, err
	}
	return Message{Type: string(kr.Type), Value: kr.Payload}, true, nil
}

// evictKeys drops the in-memory keys and replies the store has applied.
func (e *Engine) evictKeys(applied uint64) {
	t := &e.keys
	t.mu.Lock()
	n := 0
	for n < len(t.settled) && t.settled[n].ent.pos <= applied {
		n++
	}
	done := append([]settledKey(nil), t.settled[:n]...)
	t.settled = append(t.settled[:0], t.settled[n:]...)
	for id, r := range t.replies {
		if r.pos <= applied {
			delete(t.replies, id)
		}
	}
	t.mu.Unlock()
	for _, s := range done {
		p := &t.parts[keyHash([]byte(s.identity))%16]
		p.mu.Lock()
		if p.m[s.identity] == s.ent {
			delete(p.m, s.identity)
		}
		p.mu.Unlock()
	}
}
