package kafka

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/shardfn/shardfn/engine"
)

// Built-in function types. Specs returns them; an engine that runs Kafka
// ingresses or egresses registers them at Open.
const (
	// Namespace of the built-in types.
	Namespace = "shardfn-kafka"
	// PositionsType keeps, per ingress partition, the next offset to
	// consume (instance id "<ingress id>/<topic>/<partition>", state
	// "next"). Every record before it was consumed by an invocation whose
	// effect record is durable.
	PositionsType = "positions"
	// DeadLettersType writes the records an ingress or egress could not
	// deliver to the engine's dead-letters egress (instance id: the
	// ingress or egress id). Its messages are the dead-letter records.
	DeadLettersType = "dead-letters"
)

var nextSpec = engine.ValueSpec{Name: "next", Type: engine.TypeLong}

// Specs are the built-in function types of this package.
func Specs() []engine.FunctionSpec {
	return []engine.FunctionSpec{
		{Namespace: Namespace, Type: PositionsType, States: []engine.ValueSpec{nextSpec},
			Function: engine.FunctionFunc(setPosition)},
		{Namespace: Namespace, Type: DeadLettersType, Function: engine.FunctionFunc(writeDeadLetter)},
	}
}

func setPosition(ctx engine.Context, msg engine.Message) error {
	v, err := msg.AsInt64()
	if err != nil {
		return err
	}
	return ctx.SetInt64(nextSpec, v)
}

func writeDeadLetter(ctx engine.Context, msg engine.Message) error {
	ctx.Egress(engine.DeadLetterEgress, engine.Message{Type: engine.DeadLetterType, Value: msg.Value})
	return nil
}

func positionAddr(ingressID string, tp TopicPartition) engine.Address {
	return engine.Address{Namespace: Namespace, Type: PositionsType,
		ID: ingressID + "/" + tp.Topic + "/" + strconv.FormatInt(int64(tp.Partition), 10)}
}

// readPosition returns the durable next offset of an ingress partition.
func readPosition(ctx context.Context, eng *engine.Engine, ingressID string, tp TopicPartition) (int64, bool, error) {
	vals, err := eng.State(ctx, positionAddr(ingressID, tp))
	if err != nil {
		return 0, false, err
	}
	for _, v := range vals {
		if v.Spec.Name == nextSpec.Name && v.Present {
			n, err := engine.DecodeLongWrapper(v.Value)
			if err != nil {
				return 0, false, fmt.Errorf("kafka: position of %s %s: %w", ingressID, tp, err)
			}
			return n, true, nil
		}
	}
	return 0, false, nil
}

// positionMsg is the message that records next as a partition's position.
func positionMsg(ingressID string, tp TopicPartition, next int64) engine.Outgoing {
	return engine.Outgoing{To: positionAddr(ingressID, tp), Message: engine.Int64(next)}
}

// recordKey is the idempotency key of the messages made from one Kafka
// record: "kafka/<ingress id>/<topic>/<partition>/<offset>", or a hash of
// it when that is longer than the engine allows.
func recordKey(ingressID string, tp TopicPartition, offset int64) string {
	k := "kafka/" + ingressID + "/" + tp.Topic + "/" + strconv.FormatInt(int64(tp.Partition), 10) + "/" + strconv.FormatInt(offset, 10)
	if len(k) <= engine.MaxKeyBytes {
		return k
	}
	h := sha256.Sum256([]byte(k))
	return "kafka/sha256/" + hex.EncodeToString(h[:])
}

// deadLetter is the JSON of a dead-letter record (the engine's fields,
// which ReplayDeadLetters reads, plus where the record came from).
type deadLetter struct {
	Target     string         `json:"target"`
	Caller     string         `json:"caller"`
	Type       string         `json:"type"`
	Error      string         `json:"error"`
	PayloadB64 string         `json:"payload_b64"`
	Kafka      deadLetterFrom `json:"kafka"`
}

type deadLetterFrom struct {
	Ingress   string `json:"ingress,omitempty"`
	Egress    string `json:"egress,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Partition *int32 `json:"partition,omitempty"`
	Offset    int64  `json:"offset"`
	KeyB64    string `json:"key_b64,omitempty"`
	// Truncated: the payload was longer than half the engine's message
	// limit and was cut there.
	Truncated bool `json:"truncated,omitempty"`
}

// deadLetterMsg builds the message that writes one dead letter, keyed so
// that it is written once however often it is sent.
func deadLetterMsg(from string, d deadLetter, payload []byte, maxBytes int, key string) engine.Outgoing {
	if len(payload) > maxBytes/2 {
		payload, d.Kafka.Truncated = payload[:maxBytes/2], true
	}
	d.PayloadB64 = base64.StdEncoding.EncodeToString(payload)
	b, _ := json.Marshal(d)
	return engine.Outgoing{To: engine.Address{Namespace: Namespace, Type: DeadLettersType, ID: from},
		Message: engine.Message{Type: "shardfn-kafka/dead-letter", Value: b}, Key: key}
}
