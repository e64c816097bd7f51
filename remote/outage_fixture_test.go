package remote

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// restartable is an HTTP function server that can be stopped (its
// listener and connections closed: connection refused) and started again
// on the same address, like a function service being redeployed.
type restartable struct {
	t       *testing.T
	addr    string
	handler http.Handler
	mu      sync.Mutex
	srv     *http.Server
}

// newRestartable reserves a loopback address; the server is down until
// start.
func newRestartable(t *testing.T, h http.Handler) *restartable {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &restartable{t: t, addr: ln.Addr().String(), handler: h}
	ln.Close()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) url() string { return "http://" + r.addr }

func (r *restartable) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("restart the function server on %s: %v", r.addr, err)
	}
	r.srv = &http.Server{Handler: r.handler}
	go func(s *http.Server) { _ = s.Serve(ln) }(r.srv)
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// seqFn is a StateFun function server that checks exactly-once, in-order
// application: every invocation of an address carries the next integer
// (1, 2, ...), and the function keeps the last one in state "last". A
// duplicate, a gap or a reordering shows up as a violation; a batch resent
// after a lost answer carries the same state and is harmless. failFor, when
// set, may answer an address with an HTTP status instead (0: answer).
type seqFn struct {
	mu         sync.Mutex
	violations []string
	requests   map[string][][]int64 // per address id: invocation values of each request
	inflight   map[string]int
	maxInfl    map[string]int
	failFor    func(id string) int
	badFor     func(id string) []byte // a raw 200 answer instead
}

var lastSpec = engine.ValueSpec{Name: "last", Type: engine.TypeLong}

func newSeqFn() *seqFn {
	return &seqFn{requests: map[string][][]int64{}, inflight: map[string]int{}, maxInfl: map[string]int{}}
}

func (s *seqFn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var to pb.ToFunction
	if err := proto.Unmarshal(body, &to); err != nil || to.GetInvocation() == nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	req := to.GetInvocation()
	id := req.GetTarget().GetId()
	var vals []int64
	for _, inv := range req.GetInvocations() {
		v, _ := engine.DecodeLongWrapper(inv.GetArgument().GetValue())
		vals = append(vals, v)
	}
	s.mu.Lock()
	s.requests[id] = append(s.requests[id], vals)
	s.inflight[id]++
	s.maxInfl[id] = max(s.maxInfl[id], s.inflight[id])
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[id]--
		s.mu.Unlock()
	}()
	if s.failFor != nil {
		if code := s.failFor(id); code != 0 {
			http.Error(w, "failing on purpose", code)
			return
		}
	}
	if s.badFor != nil {
		if raw := s.badFor(id); raw != nil {
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(raw)
			return
		}
	}
	var last int64
	have := false
	for _, st := range req.GetState() {
		if st.GetStateName() == "last" {
			have = true
			if st.GetStateValue().GetHasValue() {
				last, _ = engine.DecodeLongWrapper(st.GetStateValue().GetValue())
			}
		}
	}
	var out *pb.FromFunction
	if !have {
		out = incomplete(&pb.FromFunction_PersistedValueSpec{StateName: "last", TypeTypename: engine.TypeLong})
	} else {
		for _, v := range vals {
			if v != last+1 {
				s.mu.Lock()
				s.violations = append(s.violations, fmt.Sprintf("%s: got %d after %d", id, v, last))
				s.mu.Unlock()
			}
			last = v
		}
		out = result(&pb.FromFunction_InvocationResponse{StateMutations: []*pb.FromFunction_PersistedValueMutation{{
			MutationType: pb.FromFunction_PersistedValueMutation_MODIFY, StateName: "last",
			StateValue: tv(engine.TypeLong, engine.AppendLongWrapper(nil, last))}}})
	}
	b, _ := proto.Marshal(out)
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b)
}

func (s *seqFn) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) > 0 {
		t.Fatalf("exactly-once in order violated: %v", s.violations)
	}
}

func (s *seqFn) requestsFor(id string) [][]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]int64(nil), s.requests[id]...)
}

// fwdSpec is an embedded function fwd/f/<id> that forwards each message to
// test/seq/<id>: those messages are internal (durable once fwd's record
// is) rather than ingress.
func fwdSpec() engine.FunctionSpec {
	return engine.FunctionSpec{Namespace: "fwd", Type: "f", Function: engine.FunctionFunc(func(ctx engine.Context, m engine.Message) error {
		ctx.Send(engine.Address{Namespace: "test", Type: "seq", ID: ctx.Self().ID}, m)
		return nil
	})}
}

func seqAddr(id string) engine.Address { return engine.Address{Namespace: "test", Type: "seq", ID: id} }

// seqBatch is the messages from..to (inclusive) for one address, in order.
func seqBatch(to engine.Address, from, until int64) []engine.Outgoing {
	var out []engine.Outgoing
	for v := from; v <= until; v++ {
		out = append(out, engine.Outgoing{To: to, Message: engine.Int64(v)})
	}
	return out
}

func openSeqEngine(t *testing.T, dir string, f *Function) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Options{DataDir: dir, Shards: 2, SegmentSize: 1 << 20, Logger: quietLogger()},
		engine.FunctionSpec{Namespace: "test", Type: "*", Remote: f}, fwdSpec())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func lastOf(t *testing.T, e *engine.Engine, id string) (int64, bool) {
	t.Helper()
	st, err := e.State(context.Background(), seqAddr(id))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st {
		if v.Spec.Name == "last" && v.Present {
			n, err := engine.DecodeLongWrapper(v.Value)
			if err != nil {
				t.Fatal(err)
			}
			return n, true
		}
	}
	return 0, false
}

func deadLetters(t *testing.T, e *engine.Engine) []string {
	t.Helper()
	recs, err := e.ReadEgress(context.Background(), "dead-letters", 0, 1000, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Message.Value))
	}
	return out
}

func drain(t *testing.T, e *engine.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// waitUntil polls cond (hang guard only: 30 s).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), sub)
}

func outageEndpoint(url string) Endpoint {
	ep := testEndpoint(url)
	ep.MaxRetries = 0 // no bound: the default
	ep.RetryBackoff, ep.MaxRetryBackoff = 5*time.Millisecond, 200*time.Millisecond
	return ep
}
