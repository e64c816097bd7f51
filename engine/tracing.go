package engine

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/shard"
)

// Tracing (OpenTelemetry). Off unless Options.TracerProvider is set; then:
//
//   - every ingress call (Send, SendAsync, SendBatch, Request) is a span of
//     kind producer, a child of the span in the call's context (for HTTP
//     ingress, the request's traceparent header) or a new root that the
//     provider's sampler decides on; its messages carry its trace context
//     when it is sampled, nothing otherwise;
//   - every invocation attempt whose message carries a sampled context is a
//     span of kind consumer, a child of that context (shard/trace.go says
//     where it starts and ends); the messages it sends, delayed ones
//     included, carry its context, which is kept in the log and the store,
//     so a trace goes on after a restart;
//   - a remote call gets the attempt's span context as RemoteBatch.Trace
//     (package remote sends it as the W3C traceparent header, under a
//     client span per HTTP attempt).
//
// Only sampled contexts travel: the sampling decision is taken once, where
// a trace enters, and an unsampled message costs nothing downstream. With
// tracing off the engine tests one nil pointer per ingress call and the
// shards one nil interface per invocation.

// TracerName is the instrumentation scope of the engine's spans.
const TracerName = "github.com/shardfn/shardfn/engine"

// Span names of ingress calls (the function type is appended when sampled).
const (
	spanSend    = "send"
	spanRequest = "request"
	spanBatch   = "send batch"
)

// Span attributes.
const (
	attrTarget      = attribute.Key("shardfn.target")
	attrCaller      = attribute.Key("shardfn.caller")
	attrMessageType = attribute.Key("shardfn.message.type")
	attrMessageID   = attribute.Key("shardfn.message.id")
	attrShard       = attribute.Key("shardfn.shard")
	attrAttempt     = attribute.Key("shardfn.attempt")
	attrBatchSize   = attribute.Key("shardfn.batch.size")
)

// maxLinks bounds the links of a remote batch's span to the other traces
// its messages carry.
const maxLinks = 32

// producerKind is the start option of ingress spans (built once: an
// unsampled ingress call allocates only what the SDK must).
var producerKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}

type tracing struct {
	t trace.Tracer
}

func newTracing(tp trace.TracerProvider) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{t: tp.Tracer(TracerName)}
}

// spanContext converts a message's trace context into OpenTelemetry's (a
// remote span context; invalid when tc is zero).
func spanContext(tc format.TraceContext) trace.SpanContext {
	if tc.IsZero() {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tc.TraceID, SpanID: tc.SpanID, TraceFlags: trace.TraceFlags(tc.Flags), Remote: true,
	})
}

// traceContext is what a message keeps of a span context: all of it when
// sampled, nothing otherwise (the trace state is not kept).
func traceContext(sc trace.SpanContext) format.TraceContext {
	if !sc.IsValid() || !sc.IsSampled() {
		return format.TraceContext{}
	}
	return format.TraceContext{TraceID: sc.TraceID(), SpanID: sc.SpanID(), Flags: byte(sc.TraceFlags())}
}

// startIngress starts the span of one ingress call. tc is the context its
// messages carry (zero unless sampled).
func (t *tracing) startIngress(ctx context.Context, op string, to Address, typ string) (trace.Span, format.TraceContext) {
	_, span := t.t.Start(ctx, op, producerKind...)
	if !span.IsRecording() {
		return span, format.TraceContext{}
	}
	if !to.IsZero() {
		span.SetName(op + " " + to.FunctionType())
		span.SetAttributes(attrTarget.String(to.String()), attrMessageType.String(typ))
	}
	return span, traceContext(span.SpanContext())
}

// endIngress ends an ingress call's span.
func endIngress(span trace.Span, id uint64, err error) {
	if span.IsRecording() {
		if id != 0 {
			span.SetAttributes(attrMessageID.String(strconv.FormatUint(id, 10)))
		}
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

func (e *Engine) tracedSend(ctx context.Context, to Address, msg Message, opts []SendOption) (uint64, error) {
	span, tc := e.tr.startIngress(ctx, spanSend, to, msg.Type)
	id, err := e.send(ctx, to, msg, tc, opts)
	endIngress(span, id, err)
	return id, err
}

func (e *Engine) tracedSendAsync(to Address, msg Message) error {
	span, tc := e.tr.startIngress(context.Background(), spanSend, to, msg.Type)
	id, err := e.submit(to, msg, nil, tc)
	endIngress(span, id, err)
	return err
}

func (e *Engine) tracedSendBatch(ctx context.Context, msgs []Outgoing) error {
	var to Address
	var typ string
	if len(msgs) > 0 {
		to, typ = msgs[0].To, msgs[0].Message.Type
	}
	span, tc := e.tr.startIngress(ctx, spanBatch, to, typ)
	if span.IsRecording() {
		span.SetAttributes(attrBatchSize.Int(len(msgs)))
	}
	err := e.sendBatch(ctx, msgs, tc)
	endIngress(span, 0, err)
	return err
}

func (e *Engine) tracedRequest(ctx context.Context, to Address, msg Message, opts []SendOption) (Message, error) {
	span, tc := e.tr.startIngress(ctx, spanRequest, to, msg.Type)
	r, err := e.request(ctx, to, msg, tc, opts)
	endIngress(span, 0, err)
	return r, err
}

// shardTracer is the shard.Tracer of one shard.
type shardTracer struct {
	t     *tracing
	shard int
}

var _ shard.Tracer = (*shardTracer)(nil)

// shardTracer returns shard i's tracer: nil (no interface) when tracing is
// off, so that the shard skips it with one test.
func (e *Engine) shardTracer(i int) shard.Tracer {
	if e.tr == nil {
		return nil
	}
	return &shardTracer{t: e.tr, shard: i}
}

// Start implements shard.Tracer: a consumer span, the child of the first
// sampled message of msgs, linked to the other traces of the batch.
func (st *shardTracer) Start(target Address, msgs []format.Envelope, attempt int) (any, format.TraceContext) {
	parent := -1
	for i := range msgs {
		if msgs[i].Trace.Sampled() {
			parent = i
			break
		}
	}
	if parent < 0 {
		return nil, format.TraceContext{}
	}
	p := &msgs[parent]
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), spanContext(p.Trace))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	var links []trace.Link
	for i := parent + 1; i < len(msgs) && len(links) < maxLinks; i++ {
		if tc := msgs[i].Trace; tc.Sampled() && tc != p.Trace && !linked(links, tc) {
			links = append(links, trace.Link{SpanContext: spanContext(tc)})
		}
	}
	if len(links) > 0 {
		opts = append(opts, trace.WithLinks(links...))
	}
	_, span := st.t.t.Start(ctx, "invoke "+target.FunctionType(), opts...)
	if !span.IsRecording() {
		span.End()
		return nil, format.TraceContext{}
	}
	attrs := []attribute.KeyValue{
		attrTarget.String(target.String()),
		attrMessageType.String(p.Type),
		attrMessageID.String(strconv.FormatUint(p.ID, 10)),
		attrShard.Int(st.shard),
		attrAttempt.Int(attempt),
	}
	if !p.Caller.IsZero() {
		attrs = append(attrs, attrCaller.String(p.Caller.String()))
	}
	if len(msgs) > 1 {
		attrs = append(attrs, attrBatchSize.Int(len(msgs)))
	}
	span.SetAttributes(attrs...)
	return span, traceContext(span.SpanContext())
}

func linked(links []trace.Link, tc format.TraceContext) bool {
	for _, l := range links {
		if l.SpanContext.TraceID() == trace.TraceID(tc.TraceID) && l.SpanContext.SpanID() == trace.SpanID(tc.SpanID) {
			return true
		}
	}
	return false
}

// End implements shard.Tracer.
func (st *shardTracer) End(span any, err error) {
	sp, ok := span.(trace.Span)
	if !ok {
		return
	}
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}
