package shard

import "github.com/shardfn/shardfn/internal/format"

// Tracing. A message carries the trace context of the span that sent it
// (format.Envelope.Trace, kept in records and stored messages). The shard
// starts one span per invocation attempt whose message carries a sampled
// context, and gives every message the attempt sends that span's context:
//
//   - an embedded invocation: from just before the function runs to just
//     after its effect record is built (or it is dead-lettered);
//   - a remote batch: from StartAsync to the moment its result is applied
//     on the shard (or abandoned); a batch started again for new state
//     specs is a new attempt, a new span. The remote client adds a span per
//     HTTP attempt under it.
//
// The shard core knows no tracing library and reads no clock for this: the
// engine implements Tracer (engine/tracing.go) and stamps the times. With
// Config.Tracer nil the shard tests one nil interface per invocation and
// allocates nothing.

// Tracer records invocation attempts as spans. Safe for concurrent use:
// Start runs on the shard goroutine, End on the shard goroutine or, for a
// remote call released after its shard stopped, on the completing one.
type Tracer interface {
	// Start starts the span of one invocation attempt of target that
	// consumes msgs (one message for an embedded function, the batch of a
	// remote one, at least one of them sampled; the span's parent is the
	// first sampled one). attempt counts from 1. It returns the span, for
	// End, and the span's trace context, which every message the attempt
	// sends carries (zero: the span is not sampled).
	Start(target format.Address, msgs []format.Envelope, attempt int) (span any, tc format.TraceContext)
	// End ends a span that Start returned; err is why the attempt failed
	// (dead letter, abandoned), if it did.
	End(span any, err error)
}

// traceInvoke starts the span of the embedded invocation of e, if tracing
// is on and e's trace is sampled, and makes the invocation's sends carry
// its context. It returns the span (nil: none).
func (s *Shard) traceInvoke(inv *Invocation, e *format.Envelope) any {
	if s.cfg.Tracer == nil || !e.Trace.Sampled() {
		return nil
	}
	span, tc := s.cfg.Tracer.Start(inv.self, s.one(e), 1)
	inv.trace = tc
	return span
}

// traceEnd ends span (nil: nothing to end).
func (s *Shard) traceEnd(span any, err error) {
	if span != nil {
		s.cfg.Tracer.End(span, err)
	}
}

// traceCall starts the span of a remote call's current attempt, if tracing
// is on and one of its messages is sampled.
func (s *Shard) traceCall(call *AsyncCall) {
	call.Trace = format.TraceContext{}
	if s.cfg.Tracer == nil {
		return
	}
	for i := range call.Messages {
		if call.Messages[i].Trace.Sampled() {
			call.span, call.Trace = s.cfg.Tracer.Start(call.Target, call.Messages, call.Attempts)
			return
		}
	}
}

// traceEnd ends the span of a remote call's current attempt.
func (c *AsyncCall) traceEnd(err error) {
	if c.span != nil {
		c.shard.cfg.Tracer.End(c.span, err)
		c.span = nil
	}
}
