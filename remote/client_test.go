package remote

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

var (
	specCount = engine.ValueSpec{Name: "count", Type: engine.TypeLong}
	specName  = engine.ValueSpec{Name: "name", Type: engine.TypeString, Mode: engine.ExpireAfterWrite, Expiry: time.Minute}
)

func TestRoundTripEveryField(t *testing.T) {
	var gotMethod, gotCT, gotPath, gotAccept string
	srv := newFnServer(t, func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply {
		gotMethod, gotCT, gotPath, gotAccept = r.Method, r.Header.Get("Content-Type"), r.URL.Path, r.Header.Get("Accept")
		return reply{from: result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{
				{MutationType: pb.FromFunction_PersistedValueMutation_MODIFY, StateName: "count", StateValue: tv(engine.TypeLong, engine.Int64(7).Value)},
				{MutationType: pb.FromFunction_PersistedValueMutation_DELETE, StateName: "name"},
			},
			OutgoingMessages: []*pb.FromFunction_Invocation{
				{Target: addr("test", "other", "o1"), Argument: tv("test/ping", []byte(`{"a":1}`))},
			},
			DelayedInvocations: []*pb.FromFunction_DelayedInvocation{
				{DelayInMs: 1500, Target: addr("test", "greeter", "g1"), Argument: tv(engine.TypeString, engine.String("later").Value), CancellationToken: "tok-1"},
				{DelayInMs: 0, Target: addr("test", "greeter", "g2"), Argument: tv(engine.TypeString, nil)},
				{IsCancellationRequest: true, CancellationToken: "tok-0"},
			},
			OutgoingEgresses: []*pb.FromFunction_EgressMessage{
				{EgressNamespace: "io.example", EgressType: "out", Argument: tv("test/rec", []byte("r"))},
			},
		})}
	})
	c := newTestClient(t)
	f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
	b := &engine.RemoteBatch{
		Target: engine.Address{Namespace: "test", Type: "greeter", ID: "g1"},
		States: []engine.StateValue{
			{Spec: specCount, Value: engine.Int64(6).Value, Present: true},
			{Spec: specName},
		},
		Invocations: []engine.RemoteInvocation{
			{Message: engine.String("from ingress")},
			{Caller: engine.Address{Namespace: "test", Type: "other", ID: "o1"}, HasCaller: true, Message: engine.Message{Type: "test/ping", Value: []byte{}}},
		},
	}
	res := invoke(t, f, b)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if gotMethod != http.MethodPost || gotCT != "application/octet-stream" || gotAccept != "application/octet-stream" || gotPath != "/greeter" {
		t.Fatalf("request: method %q content-type %q accept %q path %q", gotMethod, gotCT, gotAccept, gotPath)
	}
	reqs := srv.recorded()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	want := &pb.ToFunction_InvocationBatchRequest{
		Target: addr("test", "greeter", "g1"),
		State: []*pb.ToFunction_PersistedValue{
			{StateName: "count", StateValue: tv(engine.TypeLong, engine.Int64(6).Value)},
			{StateName: "name"},
		},
		Invocations: []*pb.ToFunction_Invocation{
			{Argument: tv(engine.TypeString, engine.String("from ingress").Value)},
			{Caller: addr("test", "other", "o1"), Argument: tv("test/ping", nil)},
		},
	}
	if !proto.Equal(reqs[0], want) {
		t.Fatalf("request\n got %v\nwant %v", reqs[0], want)
	}
	wantRes := &engine.RemoteResult{
		Mutations: []engine.StateMutation{
			{Name: "count", Value: engine.Message{Type: engine.TypeLong, Value: engine.Int64(7).Value}},
			{Name: "name", Delete: true},
		},
		Sends: []engine.Outgoing{{To: engine.Address{Namespace: "test", Type: "other", ID: "o1"}, Message: engine.Message{Type: "test/ping", Value: []byte(`{"a":1}`)}}},
		Delayed: []engine.DelayedSend{
			{To: engine.Address{Namespace: "test", Type: "greeter", ID: "g1"}, Message: engine.String("later"), Delay: 1500 * time.Millisecond, Token: "tok-1"},
			{To: engine.Address{Namespace: "test", Type: "greeter", ID: "g2"}, Message: engine.Message{Type: engine.TypeString, Value: []byte{}}},
		},
		Cancels: []string{"tok-0"},
		Egress:  []engine.EgressOut{{Name: "io.example/out", Message: engine.Message{Type: "test/rec", Value: []byte("r")}}},
	}
	if !reflect.DeepEqual(res, wantRes) {
		t.Fatalf("result\n got %+v\nwant %+v", res, wantRes)
	}
	if v := counterValue(t, c.metrics.batches, "test/*", "ok"); v != 1 {
		t.Fatalf("batches ok = %v", v)
	}
}

func TestIncompleteInvocationContext(t *testing.T) {
	srv := newFnServer(t, func(n int, r *http.Request, req *pb.ToFunction_InvocationBatchRequest) reply {
		return reply{from: incomplete(
			&pb.FromFunction_PersistedValueSpec{StateName: "a", TypeTypename: engine.TypeString},
			&pb.FromFunction_PersistedValueSpec{StateName: "b", TypeTypename: engine.TypeInt, ExpirationSpec: &pb.FromFunction_ExpirationSpec{Mode: pb.FromFunction_ExpirationSpec_AFTER_WRITE, ExpireAfterMillis: 2000}},
			&pb.FromFunction_PersistedValueSpec{StateName: "c", TypeTypename: "x/y", ExpirationSpec: &pb.FromFunction_ExpirationSpec{Mode: pb.FromFunction_ExpirationSpec_AFTER_INVOKE, ExpireAfterMillis: 5}},
			&pb.FromFunction_PersistedValueSpec{StateName: "d"},
		)}
	})
	c := newTestClient(t)
	f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
	res := invoke(t, f, &engine.RemoteBatch{Target: engine.Address{Namespace: "test", Type: "t", ID: "1"}, Invocations: []engine.RemoteInvocation{{Message: engine.String("x")}}})
	want := &engine.RemoteResult{MissingSpecs: []engine.ValueSpec{
		{Name: "a", Type: engine.TypeString},
		{Name: "b", Type: engine.TypeInt, Mode: engine.ExpireAfterWrite, Expiry: 2 * time.Second},
		{Name: "c", Type: "x/y", Mode: engine.ExpireAfterInvoke, Expiry: 5 * time.Millisecond},
		{Name: "d", Type: TypeUnset},
	}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("got %+v\nwant %+v", res, want)
	}
}

func TestEmptyResponseIsNoEffects(t *testing.T) {
	for _, body := range [][]byte{{}, mustMarshal(t, &pb.FromFunction{}), mustMarshal(t, result(nil))} {
		srv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply {
			return reply{raw: body}
		})
		c := newTestClient(t)
		f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
		res := invoke(t, f, oneBatch())
		if !reflect.DeepEqual(res, &engine.RemoteResult{}) {
			t.Fatalf("body %x: got %+v", body, res)
		}
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func oneBatch() *engine.RemoteBatch {
	return &engine.RemoteBatch{
		Target:      engine.Address{Namespace: "test", Type: "t", ID: "1"},
		States:      []engine.StateValue{{Spec: specCount}},
		Invocations: []engine.RemoteInvocation{{Message: engine.String("x")}},
	}
}

func okResult() *pb.FromFunction {
	return result(&pb.FromFunction_InvocationResponse{
		OutgoingEgresses: []*pb.FromFunction_EgressMessage{{EgressNamespace: "e", EgressType: "ok", Argument: tv("t/x", nil)}},
	})
}

// TestRetryPolicy: failures that may heal are retried and then succeed;
// the others (a 4xx, a malformed answer) fail the batch at the first
// attempt. Each failed attempt is counted by reason.
func TestRetryPolicy(t *testing.T) {
	cases := []struct {
		name     string
		fail     reply
		retried  bool
		reason   string // bad_responses reason
		failure  string // failures reason
		hijacked bool
		cutShort bool // the answer's body breaks off mid-way
	}{
		{name: "500", fail: reply{status: 500}, retried: true, failure: failHTTP5xx},
		{name: "503", fail: reply{status: 503}, retried: true, failure: failHTTP5xx},
		{name: "429", fail: reply{status: 429}, retried: true, failure: failHTTP429},
		{name: "408", fail: reply{status: 408}, retried: true, failure: failHTTP408},
		{name: "disconnect", hijacked: true, retried: true, failure: failNetwork},
		{name: "reset mid-response", hijacked: true, cutShort: true, retried: true, failure: failNetwork},
		{name: "garbage", fail: reply{raw: []byte{0xff, 0xff, 0xff}}, reason: reasonProtobuf, failure: failBadResponse},
		{name: "html", fail: reply{raw: []byte("<html>"), contentType: "text/html"}, reason: reasonContentType, failure: failBadResponse},
		{name: "400", fail: reply{status: 400}, failure: failHTTPStatus},
		{name: "404", fail: reply{status: 404}, failure: failHTTPStatus},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFnServer(t, nil)
			srv.handle = func(n int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
				if n <= 2 {
					return tc.fail
				}
				return reply{from: okResult()}
			}
			if tc.hijacked {
				srv.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if srv.calls.Add(1) <= 2 {
						conn, _, _ := w.(http.Hijacker).Hijack()
						if tc.cutShort {
							_, _ = conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"))
						}
						conn.Close()
						return
					}
					w.Header().Set("Content-Type", "application/octet-stream")
					_, _ = w.Write(mustMarshal(t, okResult()))
				})
			}
			c := newTestClient(t)
			f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
			res := invoke(t, f, oneBatch())
			if tc.retried {
				if res.Err != nil || len(res.Egress) != 1 {
					t.Fatalf("want success after retries, got %+v", res)
				}
				if got := srv.calls.Load(); got != 3 {
					t.Fatalf("%d attempts, want 3", got)
				}
				if v := counterValue(t, c.metrics.retries, "test/*"); v != 2 {
					t.Fatalf("retries metric %v, want 2", v)
				}
				if v := counterValue(t, c.metrics.failures, "test/*", tc.failure); v != 2 {
					t.Fatalf("failures{%s} = %v, want 2", tc.failure, v)
				}
				return
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), "not retryable") {
				t.Fatalf("want a not-retryable error, got %+v", res)
			}
			if got := srv.calls.Load(); got != 1 {
				t.Fatalf("%d attempts, want 1", got)
			}
			if v := counterValue(t, c.metrics.failures, "test/*", tc.failure); v != 1 {
				t.Fatalf("failures{%s} = %v, want 1", tc.failure, v)
			}
			if tc.reason != "" {
				if v := counterValue(t, c.metrics.badResponses, "test/*", tc.reason); v != 1 {
					t.Fatalf("bad_responses{%s} = %v, want 1", tc.reason, v)
				}
			}
			if v := counterValue(t, c.metrics.batches, "test/*", outcomeFailed); v != 1 {
				t.Fatalf("failed batches %v, want 1", v)
			}
		})
	}
}

func TestDeadLetterAfterMaxRetries(t *testing.T) {
	srv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply {
		return reply{status: 503, raw: []byte("overloaded")}
	})
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.MaxRetries = 4
	f := newTestFunction(t, c, ep)
	res := invoke(t, f, oneBatch())
	if res.Err == nil || !errors.Is(res.Err, ErrGaveUp) || !strings.Contains(res.Err.Error(), "after 5 attempts (maxRetries 4)") || !strings.Contains(res.Err.Error(), "HTTP 503: overloaded") {
		t.Fatalf("got %+v", res)
	}
	if len(res.Mutations)+len(res.Sends)+len(res.Egress)+len(res.Delayed)+len(res.Cancels)+len(res.MissingSpecs) != 0 {
		t.Fatalf("a failed result carries effects: %+v", res)
	}
	if got := srv.calls.Load(); got != 5 {
		t.Fatalf("%d attempts, want 5", got)
	}
	if v := counterValue(t, c.metrics.batches, "test/*", "failed"); v != 1 {
		t.Fatalf("failed batches %v", v)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	c := newTestClient(t)
	for _, d := range []time.Duration{2, time.Millisecond, time.Second, 3 * time.Second} {
		lo, hi := d, time.Duration(0)
		for i := 0; i < 2000; i++ {
			j := c.jitter(d)
			if j < d/2 || j > d {
				t.Fatalf("jitter(%v) = %v outside [d/2, d]", d, j)
			}
			lo, hi = min(lo, j), max(hi, j)
		}
		if d >= time.Millisecond && (lo > d*6/10 || hi < d*9/10) {
			t.Fatalf("jitter(%v) spans only [%v, %v]", d, lo, hi)
		}
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := newFnServer(t, func(n int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		if n == 1 {
			select { // hang until the client gives up on this attempt
			case <-r.Context().Done():
			case <-release:
			}
			return reply{status: 500}
		}
		return reply{from: okResult()}
	})
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.ReadTimeout = 50 * time.Millisecond
	ep.WriteTimeout = 50 * time.Millisecond
	f := newTestFunction(t, c, ep)
	res := invoke(t, f, oneBatch())
	if res.Err != nil || len(res.Egress) != 1 {
		t.Fatalf("got %+v", res)
	}
	if v := counterValue(t, c.metrics.requests, "test/*", "timeout"); v != 1 {
		t.Fatalf("timeouts %v, want 1", v)
	}
}

// TestCallTimeoutBoundsOneAttempt: CallTimeout ends an attempt that hangs,
// and the batch is retried (it used to bound the whole batch and
// dead-letter it).
func TestCallTimeoutBoundsOneAttempt(t *testing.T) {
	srv := newFnServer(t, func(n int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		if n <= 3 {
			<-r.Context().Done()
			return reply{status: 500}
		}
		return reply{from: okResult()}
	})
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.CallTimeout = 100 * time.Millisecond
	ep.MaxRetries = 0
	f := newTestFunction(t, c, ep)
	res := invoke(t, f, oneBatch())
	if res.Err != nil || len(res.Egress) != 1 {
		t.Fatalf("got %+v", res)
	}
	if n := srv.calls.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
	if v := counterValue(t, c.metrics.failures, "test/*", failTimeout); v != 3 {
		t.Fatalf("timeout failures %v, want 3", v)
	}
}

func TestConcurrencyLimitQueues(t *testing.T) {
	const limit, total = 2, 10
	var cur, peak atomic.Int64
	arrived := make(chan struct{}, total)
	release := make(chan struct{})
	srv := newFnServer(t, func(n int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		v := cur.Add(1)
		for {
			p := peak.Load()
			if v <= p || peak.CompareAndSwap(p, v) {
				break
			}
		}
		arrived <- struct{}{}
		<-release
		cur.Add(-1)
		return reply{from: okResult()}
	})
	c := newTestClient(t)
	ep := testEndpoint(srv.srv.URL)
	ep.MaxConcurrency = limit
	f := newTestFunction(t, c, ep)
	results := make(chan *engine.RemoteResult, total)
	for i := 0; i < total; i++ {
		f.InvokeBatch(oneBatch(), func(r *engine.RemoteResult) { results <- r })
	}
	// InvokeBatch queued everything synchronously: limit calls run, the rest wait.
	if q := gaugeValue(t, c.metrics.queued, "test/*"); q != total-limit {
		t.Fatalf("queued gauge %v, want %d", q, total-limit)
	}
	for i := 0; i < limit; i++ {
		<-arrived
	}
	if q := gaugeValue(t, c.metrics.inflight, "test/*"); q != limit {
		t.Fatalf("inflight gauge %v, want %d", q, limit)
	}
	close(release)
	for i := 0; i < total; i++ {
		if r := <-results; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("peak concurrency %d, want %d", p, limit)
	}
	if n := srv.calls.Load(); n != total {
		t.Fatalf("%d calls, want %d (none lost)", n, total)
	}
}

// TestHostileResponses: every malformed answer fails the batch at once
// (it will not heal by asking again) with a clear error and a counter;
// nothing panics.
func TestHostileResponses(t *testing.T) {
	mod := pb.FromFunction_PersistedValueMutation_MODIFY
	cases := []struct {
		name, reason, msg string
		rep               reply
	}{
		{"bad protobuf", reasonProtobuf, "does not parse", reply{raw: []byte{0x0a, 0x05, 0x01}}},
		{"unknown state", reasonState, `state "nope" is not registered`, reply{from: result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{{MutationType: mod, StateName: "nope", StateValue: tv(engine.TypeLong, nil)}}})}},
		{"wrong state type", reasonStateType, "registered type is", reply{from: result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{{MutationType: mod, StateName: "count", StateValue: tv(engine.TypeString, nil)}}})}},
		{"modify without value", reasonMissingValue, "without state_value", reply{from: result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{{MutationType: mod, StateName: "count"}}})}},
		{"unknown mutation type", reasonState, "unknown mutation type", reply{from: result(&pb.FromFunction_InvocationResponse{
			StateMutations: []*pb.FromFunction_PersistedValueMutation{{MutationType: 7, StateName: "count"}}})}},
		{"message without target", reasonTarget, "missing target address", reply{from: result(&pb.FromFunction_InvocationResponse{
			OutgoingMessages: []*pb.FromFunction_Invocation{{Argument: tv("a/b", nil)}}})}},
		{"message with partial target", reasonTarget, "incomplete target", reply{from: result(&pb.FromFunction_InvocationResponse{
			OutgoingMessages: []*pb.FromFunction_Invocation{{Target: addr("ns", "", "x"), Argument: tv("a/b", nil)}}})}},
		{"message without argument", reasonMissingValue, "has no argument", reply{from: result(&pb.FromFunction_InvocationResponse{
			OutgoingMessages: []*pb.FromFunction_Invocation{{Target: addr("ns", "t", "x")}}})}},
		{"empty cancellation token", reasonToken, "empty token", reply{from: result(&pb.FromFunction_InvocationResponse{
			DelayedInvocations: []*pb.FromFunction_DelayedInvocation{{IsCancellationRequest: true}}})}},
		{"negative delay", reasonDelay, "delay_in_ms -5", reply{from: result(&pb.FromFunction_InvocationResponse{
			DelayedInvocations: []*pb.FromFunction_DelayedInvocation{{DelayInMs: -5, Target: addr("a", "b", "c"), Argument: tv("a/b", nil)}}})}},
		{"delayed without target", reasonTarget, "missing target", reply{from: result(&pb.FromFunction_InvocationResponse{
			DelayedInvocations: []*pb.FromFunction_DelayedInvocation{{DelayInMs: 5, Argument: tv("a/b", nil)}}})}},
		{"egress without name", reasonEgress, "needs a namespace and a type", reply{from: result(&pb.FromFunction_InvocationResponse{
			OutgoingEgresses: []*pb.FromFunction_EgressMessage{{EgressType: "x", Argument: tv("a/b", nil)}}})}},
		{"bad spec name", reasonSpec, "state name", reply{from: incomplete(&pb.FromFunction_PersistedValueSpec{StateName: "9lives"})}},
		{"bad expiry", reasonSpec, "negative expire_after_millis", reply{from: incomplete(&pb.FromFunction_PersistedValueSpec{StateName: "x",
			ExpirationSpec: &pb.FromFunction_ExpirationSpec{Mode: pb.FromFunction_ExpirationSpec_AFTER_WRITE, ExpireAfterMillis: -1}})}},
		{"empty incomplete context", reasonSpec, "lists no missing values", reply{from: incomplete()}},
		{"oversized", reasonTooLarge, "exceeds MaxResponseBytes", reply{raw: bytes.Repeat([]byte{0}, 5000)}},
		{"content type", reasonContentType, "Content-Type", reply{from: okResult(), contentType: "text/plain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply { return tc.rep })
			c := newTestClient(t)
			ep := testEndpoint(srv.srv.URL)
			ep.MaxRetries = 0
			ep.MaxResponseBytes = 4096
			f := newTestFunction(t, c, ep)
			res := invoke(t, f, oneBatch())
			if res.Err == nil || !errors.Is(res.Err, ErrBadResponse) || !strings.Contains(res.Err.Error(), tc.msg) {
				t.Fatalf("want a bad-response error containing %q, got %v", tc.msg, res.Err)
			}
			if srv.calls.Load() != 1 {
				t.Fatalf("%d attempts, want 1 (not retried)", srv.calls.Load())
			}
			if v := counterValue(t, c.metrics.badResponses, "test/*", tc.reason); v != 1 {
				t.Fatalf("bad_responses{%s} = %v, want 1", tc.reason, v)
			}
		})
	}
}

func TestUnsetTypeAcceptsAnyModify(t *testing.T) {
	srv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply {
		return reply{from: result(&pb.FromFunction_InvocationResponse{StateMutations: []*pb.FromFunction_PersistedValueMutation{
			{MutationType: pb.FromFunction_PersistedValueMutation_MODIFY, StateName: "loose", StateValue: tv("any/type", []byte("v"))}}})}
	})
	c := newTestClient(t)
	f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
	b := oneBatch()
	b.States = []engine.StateValue{{Spec: engine.ValueSpec{Name: "loose"}, Value: []byte("old"), Present: true}}
	res := invoke(t, f, b)
	if res.Err != nil || len(res.Mutations) != 1 || res.Mutations[0].Value.Type != "any/type" {
		t.Fatalf("got %+v", res)
	}
	if got := srv.recorded()[0].State[0].StateValue.Typename; got != TypeUnset {
		t.Fatalf("unset state sent with type %q, want %q", got, TypeUnset)
	}
}

func TestCloseFailsQueuedAndLaterCalls(t *testing.T) {
	release := make(chan struct{})
	srv := newFnServer(t, func(n int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return reply{from: okResult()}
	})
	defer close(release)
	c, err := NewClient(Options{Workers: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	f := newTestFunction(t, c, testEndpoint(srv.srv.URL))
	results := make(chan *engine.RemoteResult, 3)
	for i := 0; i < 3; i++ {
		f.InvokeBatch(oneBatch(), func(r *engine.RemoteResult) { results <- r })
	}
	for srv.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if r := <-results; !errors.Is(r.Err, ErrClosed) {
			t.Fatalf("result %d: %v, want ErrClosed", i, r.Err)
		}
	}
	var late *engine.RemoteResult
	f.InvokeBatch(oneBatch(), func(r *engine.RemoteResult) { late = r })
	if late == nil || !errors.Is(late.Err, ErrClosed) {
		t.Fatalf("InvokeBatch after Close: %+v", late)
	}
}

func TestUnixSocketEndpoint(t *testing.T) {
	dir, err := os.MkdirTemp("", "sfn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "fn.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("unix sockets unavailable: %v", err)
	}
	var path string
	var mu sync.Mutex
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		path = r.URL.Path
		mu.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(mustMarshal(t, okResult()))
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	c := newTestClient(t)
	ep := testEndpoint("")
	ep.URLTemplate = fmt.Sprintf("http+unix://%s/fn/{function.name}", sock)
	f := newTestFunction(t, c, ep)
	res := invoke(t, f, oneBatch())
	mu.Lock()
	defer mu.Unlock()
	if res.Err != nil || path != "/fn/t" {
		t.Fatalf("path %q, result %+v", path, res)
	}
}

func TestSpecsFromModule(t *testing.T) {
	m, err := ParseModule(strings.NewReader(`
kind: io.statefun.endpoints.v2/http
spec:
  functions: [shop/*, geo/cell]
  urlPathTemplate: http://127.0.0.1:1/{function.name}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t)
	specs, err := m.Specs(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Namespace != "shop" || specs[0].Type != "*" || specs[1].Type != "cell" || specs[0].Remote == nil || specs[1].Function != nil {
		t.Fatalf("specs %+v", specs)
	}
	if got := specs[1].Remote.(*Function).Endpoint().URL("cell"); got != "http://127.0.0.1:1/cell" {
		t.Fatalf("url %q", got)
	}
}
