// Package kafkaexample is the Kafka example's embedded function, built
// into cmd/engine: example/counter counts the messages of each instance
// and writes one Kafka record per message to the egress example/counts
// (topic "counts", key = the instance id, value = "<count> <message>").
// examples/kafka/module.yaml routes the topic "events" to it; see
// examples/kafka/README.md.
package kafkaexample

import (
	"strconv"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/kafka"
)

// Names of the example.
const (
	Namespace = "example"
	Type      = "counter"
	EgressID  = "example/counts"
	Topic     = "counts"
)

var count = engine.ValueSpec{Name: "count", Type: engine.TypeLong}

// Specs is the example's function type.
func Specs() []engine.FunctionSpec {
	return []engine.FunctionSpec{{Namespace: Namespace, Type: Type, States: []engine.ValueSpec{count},
		Function: engine.FunctionFunc(counter)}}
}

func counter(ctx engine.Context, msg engine.Message) error {
	n, _, err := ctx.GetInt64(count)
	if err != nil {
		return err
	}
	n++
	if err := ctx.SetInt64(count, n); err != nil {
		return err
	}
	v := strconv.AppendInt(make([]byte, 0, 21+len(msg.Value)), n, 10)
	v = append(append(v, ' '), msg.Value...)
	kafka.Write(ctx, EgressID, kafka.Record{Topic: Topic, Key: ctx.Self().ID, Value: v,
		Headers: []kafka.Header{{Key: "type", Value: []byte(msg.Type)}}})
	return nil
}
