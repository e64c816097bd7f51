package shard

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/format"
)

// fakeTracer records Start and End; span i's context has span id {i}.
type fakeTracer struct {
	log  []string
	next byte
}

func (f *fakeTracer) Start(target format.Address, msgs []format.Envelope, attempt int) (any, format.TraceContext) {
	parent := -1
	for i := range msgs {
		if msgs[i].Trace.Sampled() {
			parent = i
			break
		}
	}
	if parent < 0 {
		panic("Start for a batch with no sampled message")
	}
	f.next++
	tc := format.TraceContext{TraceID: msgs[parent].Trace.TraceID, Flags: format.TraceSampled}
	tc.SpanID[0] = f.next
	f.log = append(f.log, fmt.Sprintf("start %d %s attempt %d parent %d msgs %d", f.next, target, attempt, msgs[parent].Trace.SpanID[0], len(msgs)))
	return f.next, tc
}

func (f *fakeTracer) End(span any, err error) {
	s := fmt.Sprintf("end %d", span.(byte))
	if err != nil {
		s += " err " + err.Error()
	}
	f.log = append(f.log, s)
}

func (f *fakeTracer) take() string {
	s := strings.Join(f.log, "\n")
	f.log = nil
	return s
}

func traced(span byte) format.TraceContext {
	tc := format.TraceContext{TraceID: [16]byte{7}, Flags: format.TraceSampled}
	tc.SpanID[0] = span
	return tc
}

// TestShardSpans: the shard starts a span per invocation attempt of a
// sampled message (embedded, remote, retried remote), ends it with the
// attempt's error, and gives every message the attempt sends the span's
// context (sends, delayed sends, a remote result's sends); untraced and
// unsampled messages start nothing.
func TestShardSpans(t *testing.T) {
	h := newHarness(1, 0, 0)
	ft := &fakeTracer{}
	s := h.shards[0]
	s.cfg.Tracer = ft
	push := func(to, prog string, tc format.TraceContext) {
		t.Helper()
		h.log.nextIngress++
		env := format.Envelope{ID: h.log.nextIngress, Target: parseAddr(t, to), Type: "msg", Payload: []byte(prog), Trace: tc}
		if !s.Mailbox().Push(&env) {
			t.Fatal("mailbox full")
		}
	}
	run := func() {
		for i := 0; i < 100 && s.Step(h.now); i++ {
		}
		h.out.Reset()
	}
	expect := func(step, want string) {
		t.Helper()
		if got := ft.take(); got != want {
			t.Fatalf("%s:\n got: %q\nwant: %q", step, got, want)
		}
	}

	// A sampled message: its invocation's send and delayed send carry the
	// invocation's span (1); their invocations are its children.
	push("t/fn/a", "send t/fn/b x; later 1s t/fn/c y", traced(50))
	run()
	expect("embedded", "start 1 t/fn/a attempt 1 parent 50 msgs 1\nend 1\nstart 2 t/fn/b attempt 1 parent 1 msgs 1\nend 2")
	h.now += int64(2 * time.Second)
	run()
	expect("delayed", "start 3 t/fn/c attempt 1 parent 1 msgs 1\nend 3")

	// Untraced and unsampled messages start nothing, and neither do the
	// messages they send.
	push("t/fn/a", "send t/fn/b x", format.TraceContext{})
	unsampled := traced(60)
	unsampled.Flags = 0
	push("t/fn/a", "send t/fn/b x", unsampled)
	run()
	expect("untraced", "")

	// A failed invocation ends its span with the error.
	push("t/fn/a", "fail boom", traced(70))
	run()
	expect("dead letter", "start 4 t/fn/a attempt 1 parent 70 msgs 1\nend 4 err boom")

	// A remote batch: one span per attempt (a retry for new specs is a new
	// attempt); the result's sends carry the last attempt's span.
	push("t/remote/r", "", format.TraceContext{})
	push("t/remote/r", "", traced(80))
	run()
	expect("remote start", "start 5 t/remote/r attempt 1 parent 80 msgs 2")
	complete := func(result string) {
		call := h.h.calls[parseAddr(t, "t/remote/r")]
		delete(h.h.calls, call.Target)
		complete(call, result)
		s.Complete(call)
		run()
	}
	complete("retry")
	expect("remote retry", "end 5\nstart 6 t/remote/r attempt 2 parent 80 msgs 2")
	complete("send t/fn/e z")
	expect("remote result", "end 6\nstart 7 t/fn/e attempt 1 parent 6 msgs 1\nend 7")

	// An abandoned remote batch ends its span with the reason.
	push("t/remote/r", "", traced(90))
	run()
	expect("remote start", "start 8 t/remote/r attempt 1 parent 90 msgs 1")
	call := h.h.calls[parseAddr(t, "t/remote/r")]
	delete(h.h.calls, call.Target)
	call.Resume = func(*Invocation) (bool, error) { return false, fmt.Errorf("closing: %w", ErrAbandoned) }
	s.Complete(call)
	run()
	if got := ft.take(); !strings.HasPrefix(got, "end 8 err closing: ") {
		t.Fatalf("abandoned: %q", got)
	}
}
