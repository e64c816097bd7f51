package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/shardfn/shardfn/shard"
)

// DeadLetterEgress is the egress log that receives every message whose
// invocation failed for good; DeadLetterType is its records' type.
const (
	DeadLetterEgress = shard.DeadLetterEgress
	DeadLetterType   = shard.DeadLetterType
)

// DeadLetter is one decoded record of the dead-letters egress.
type DeadLetter struct {
	Offset  uint64
	Target  Address
	Caller  Address // zero for ingress messages
	Message Message
	Error   string
	// Bad, when set, says why the record could not be decoded (the other
	// fields are then what could be read).
	Bad string
	// Replayed (cluster mode only, cluster.Node.DeadLetters): the letter
	// was replayed and its message consumed by its target.
	Replayed bool
}

// deadLetterRecord is the JSON form the shard writes.
type deadLetterRecord struct {
	Target     string `json:"target"`
	Caller     string `json:"caller"`
	Type       string `json:"type"`
	Error      string `json:"error"`
	PayloadB64 string `json:"payload_b64"`
}

// ParseAddress parses "namespace/type/id"; the id may contain '/'.
func ParseAddress(s string) (Address, error) {
	ns, rest, ok1 := strings.Cut(s, "/")
	typ, id, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || typ == "" || id == "" {
		return Address{}, fmt.Errorf("%w: %q: want namespace/type/id, each part non-empty", ErrBadAddress, s)
	}
	return Address{Namespace: ns, Type: typ, ID: id}, nil
}

func decodeDeadLetter(r EgressRecord) DeadLetter {
	d := DeadLetter{Offset: r.Offset}
	var rec deadLetterRecord
	if r.Message.Type != DeadLetterType {
		d.Bad = fmt.Sprintf("record type %q is not %q", r.Message.Type, DeadLetterType)
		return d
	}
	if err := json.Unmarshal(r.Message.Value, &rec); err != nil {
		d.Bad = "record is not valid JSON: " + err.Error()
		return d
	}
	d.Error = rec.Error
	d.Message.Type = rec.Type
	var err error
	if d.Target, err = ParseAddress(rec.Target); err != nil {
		d.Bad = "target: " + err.Error()
		return d
	}
	if rec.Caller != "" {
		if d.Caller, err = ParseAddress(rec.Caller); err != nil {
			d.Bad = "caller: " + err.Error()
			return d
		}
	}
	if d.Message.Value, err = base64.StdEncoding.DecodeString(rec.PayloadB64); err != nil {
		d.Bad = "payload_b64: " + err.Error()
	}
	return d
}

// DeadLetters reads up to max (default 100, at most 10000) records of the
// dead-letters egress from offset from, decoded.
func (e *Engine) DeadLetters(ctx context.Context, from uint64, max int) ([]DeadLetter, error) {
	// Egress is readable once applied: wait for what is durable now.
	if err := e.waitApplied(ctx, e.wal.Durable()); err != nil {
		return nil, err
	}
	recs, err := e.ReadEgress(ctx, DeadLetterEgress, from, max, 0, 0)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(recs))
	for _, r := range recs {
		out = append(out, decodeDeadLetter(r))
	}
	return out, nil
}

// MaxReplay bounds the records of one ReplayDeadLetters call.
const MaxReplay = 10000

// ReplayResult says what ReplayDeadLetters did.
type ReplayResult struct {
	// Replayed are the records re-sent, in offset order.
	Replayed []DeadLetter
	// Skipped are records not re-sent, with Bad saying why.
	Skipped []DeadLetter
}

// ReplayDeadLetters re-sends the dead letters at offsets [from, to) as new
// ingress messages, each to its original target with its original type and
// payload (the original caller is not kept: the function sees an ingress
// message). It returns once every re-sent message is durable, like
// SendBatch. Records that cannot be re-sent (undecodable, a function type
// no longer registered, the reserved repair type) are skipped and reported.
// Replaying a range twice sends its messages twice.
func (e *Engine) ReplayDeadLetters(ctx context.Context, from, to uint64) (ReplayResult, error) {
	var res ReplayResult
	if to <= from {
		return res, fmt.Errorf("%w: replay range [%d, %d) is empty", ErrBadMessage, from, to)
	}
	if to-from > MaxReplay {
		return res, fmt.Errorf("%w: replay range [%d, %d) holds more than %d records; replay it in parts", ErrBadMessage, from, to, MaxReplay)
	}
	if err := e.waitApplied(ctx, e.wal.Durable()); err != nil {
		return res, err
	}
	var msgs []Outgoing
	for next := from; next < to; {
		recs, err := e.ReadEgress(ctx, DeadLetterEgress, next, int(to-next), 0, 0)
		if err != nil {
			return res, err
		}
		if len(recs) == 0 {
			break // past the end
		}
		for _, r := range recs {
			if r.Offset >= to {
				break
			}
			d := decodeDeadLetter(r)
			if d.Bad == "" {
				if d.Message.Type == repairType {
					d.Bad = "a state repair is not replayed; repeat it with SetState"
				} else if err := e.validate(d.Target, d.Message); err != nil {
					d.Bad = err.Error()
				}
			}
			if d.Bad != "" {
				res.Skipped = append(res.Skipped, d)
				continue
			}
			res.Replayed = append(res.Replayed, d)
			msgs = append(msgs, Outgoing{To: d.Target, Message: d.Message})
		}
		next = recs[len(recs)-1].Offset + 1
	}
	if len(msgs) == 0 {
		return res, nil
	}
	if err := e.SendBatch(ctx, msgs); err != nil {
		return res, fmt.Errorf("engine: replay of dead letters [%d, %d): %w (messages before the failing one may have been re-sent)", from, to, err)
	}
	return res, nil
}
