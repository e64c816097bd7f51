package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shardfn/shardfn/engine"
)

// Regressions found by the soak test (make soak, internal/soak).

// overloadedFake is a fakeEngine that reports overload (engine.Engine's
// Overloaded) and counts SendBatch calls.
type overloadedFake struct {
	*fakeEngine
	overloaded error
}

func (o *overloadedFake) Overloaded() error { return o.overloaded }

// TestBatchRefusedBeforeParsingWhenOverloaded: under overload a batch is
// answered 503 with Retry-After before its body is read or parsed (it used
// to be parsed whole, thousands of lines, and then refused: under a flood
// of batches the parsing took the CPU the shards needed, and throughput
// collapsed). Here the body is not even valid: parsing it would answer 400.
func TestBatchRefusedBeforeParsingWhenOverloaded(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &overloadedFake{fakeEngine: newFake(), overloaded: fmt.Errorf("%w: shard 0 holds too much", engine.ErrOverloaded)}
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	r := do(t, "POST", ing+"/batch", "application/x-ndjson", "not a batch\n")
	if r.status != 503 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("batch while overloaded: %d %v %s", r.status, r.header, r.body)
	}
	if f.batches != 0 {
		t.Fatalf("SendBatch was called %d times", f.batches)
	}
	// Not overloaded: the same body is parsed (400), a good one accepted.
	f.set(func(*fakeEngine) { f.overloaded = nil })
	if r := do(t, "POST", ing+"/batch", "application/x-ndjson", "not a batch\n"); r.status != 400 {
		t.Fatalf("bad batch: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", ing+"/batch", "application/x-ndjson", `{"to":"test/c/a","type":"test/x","body":{}}`+"\n"); r.status != 202 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
}

// TestPooledRequestKeepsNoBody: the request object the ingress pools does
// not keep the last request's body (it used to, so that every pooled
// request could hold a body of up to --max-body after its answer, outside
// --max-body-in-flight).
func TestPooledRequestKeepsNoBody(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(newFake()); err != nil {
		t.Fatal(err)
	}
	h := s.IngressHandler()
	body := strings.Repeat("x", 64<<10)
	for i := range 8 {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/test/counter/a")
		ctx.Request.Header.SetContentType("application/vnd.test/loc")
		if i%2 == 1 {
			ctx.Request.SetRequestURI("/batch")
			ctx.Request.Header.SetContentType("application/x-ndjson")
		}
		ctx.Request.SetBodyString(body)
		h(&ctx)
	}
	for range 8 {
		r := s.reqPool.Get().(*IngressRequest)
		if r.Body != nil || r.Namespace != nil {
			t.Fatalf("a pooled request keeps a body of %d bytes", len(r.Body))
		}
	}
}

// gatedFake's egress reads block until the gate is closed.
type gatedFake struct {
	*fakeEngine
	gate    chan struct{}
	reading chan struct{} // one per read that reached the gate
}

func (g *gatedFake) ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]engine.EgressRecord, error) {
	if from > 0 { // past the records: nothing to read
		if wait > 0 {
			<-ctx.Done()
		}
		return nil, nil
	}
	g.reading <- struct{}{}
	<-g.gate
	return g.fakeEngine.ReadEgress(ctx, name, from, max, maxBytes, wait)
}

// TestEgressReadsBounded: at most MaxEgressReads egress answers are read
// and built at once; one more is answered 503 with Retry-After at once (it
// used to be read too: parallel reads of big records held memory and CPU
// without bound). A long-poll waiting for records holds no slot.
func TestEgressReadsBounded(t *testing.T) {
	s, err := New(Options{MaxEgressReads: 2})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedFake{fakeEngine: newFake(), gate: make(chan struct{}), reading: make(chan struct{}, 8)}
	g.egress = []engine.EgressRecord{{Offset: 0, Message: engine.Message{Type: "test/x", Value: []byte(`{"a":1}`)}}}
	if err := s.SetEngine(g); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	// Two long-polls waiting: no slot taken.
	for range 2 {
		go func() {
			if r, err := http.Get(ing + "/egress/e?from=5&wait=10s"); err == nil {
				r.Body.Close()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			r, err := http.Get(ing + "/egress/e?from=0")
			if err != nil {
				codes <- 0
				return
			}
			r.Body.Close()
			codes <- r.StatusCode
		}()
	}
	<-g.reading // both are reading
	<-g.reading
	r := do(t, "GET", ing+"/egress/e?from=0", "", "")
	if r.status != 503 || r.header.Get("Retry-After") != "1" || !strings.Contains(errorBody(t, r), "--max-egress-reads") {
		t.Fatalf("third egress read: %d %v %s", r.status, r.header, r.body)
	}
	close(g.gate)
	for range 2 {
		if c := <-codes; c != 200 {
			t.Fatalf("egress read: %d", c)
		}
	}
	if r := do(t, "GET", ing+"/egress/e?from=0", "", ""); r.status != 200 || !strings.Contains(r.body, `"a":1`) {
		t.Fatalf("egress read after: %d %s", r.status, r.body)
	}
}

// TestBigBodyRefusedBeforeReadingWhenOverloaded: under overload a message
// body over the pooled size (16 KiB) is answered 503 with Retry-After
// before it is read (the connection is then closed; the soak's 4 MiB bodies
// were read and copied whole only to be refused, taking the CPU the shards
// needed); a small body is still read and decided by Send.
func TestBigBodyRefusedBeforeReadingWhenOverloaded(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &overloadedFake{fakeEngine: newFake(), overloaded: fmt.Errorf("%w: shard 0 holds too much", engine.ErrOverloaded)}
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	big := `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	r := do(t, "POST", ing+"/test/counter/a", "application/vnd.test/x", big)
	if r.status != 503 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("big body while overloaded: %d %v %s", r.status, r.header, r.body)
	}
	if n := f.counts["test/counter/a"]; n != 0 {
		t.Fatalf("the big body was sent %d times", n)
	}
	if r := do(t, "POST", ing+"/test/counter/a", "application/vnd.test/x", `{"small":1}`); r.status != 202 {
		t.Fatalf("small body while Overloaded reports overload: %d %s (only Send decides for it)", r.status, r.body)
	}
	f.set(func(*fakeEngine) { f.overloaded = nil })
	if r := do(t, "POST", ing+"/test/counter/a", "application/vnd.test/x", big); r.status != 202 {
		t.Fatalf("big body: %d %s", r.status, r.body)
	}
}
