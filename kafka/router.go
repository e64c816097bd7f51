package kafka

import (
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// Router turns the records of an ingress's topics into messages, as the
// ingress does (targets, ids from keys, dead letters for bad records),
// without consuming anything itself: a cluster node consumes the topics in
// its own transactions and routes what it polls.
type Router struct{ in *Ingress }

// NewRouter makes the router of spec; known says which function types are
// registered, maxMsg is the engine's message limit.
func NewRouter(spec IngressSpec, known func(FunctionType) bool, maxMsg int, m *Metrics, log *slog.Logger) *Router {
	if m == nil {
		m = NewMetrics()
	}
	if log == nil {
		log = slog.Default()
	}
	in := &Ingress{spec: spec, log: log.With("ingress", spec.ID), m: m, routes: map[string]*IngressTopic{}, known: known, maxMsg: maxMsg}
	for i := range spec.Topics {
		in.routes[spec.Topics[i].Topic] = &spec.Topics[i]
	}
	return &Router{in: in}
}

// Topics are the topics the ingress reads.
func (r *Router) Topics() []string {
	var ts []string
	for _, t := range r.in.spec.Topics {
		ts = append(ts, t.Topic)
	}
	return ts
}

// Route appends the messages of rec to dst (one per target, or a dead
// letter). Their Key is the ingress's idempotency key of the record.
func (r *Router) Route(dst []engine.Outgoing, rec *kgo.Record) []engine.Outgoing {
	return r.in.messages(dst, TopicPartition{Topic: rec.Topic, Partition: rec.Partition}, rec, "")
}
