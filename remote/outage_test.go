package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// TestEndpointOutageLosesNothing is bug 8 of issue 9: the function's server
// is stopped for four seconds (longer than the 3.5 s after which batches
// used to be dead-lettered) while messages keep coming, ingress and
// internal, and is then restarted. Every message is applied exactly once,
// in order per address, none is dead-lettered, ingress acknowledgements
// come only once their messages are applied, and the endpoint is reported
// stuck (Health, one log line, metrics) while it is down and recovered
// after.
func TestEndpointOutageLosesNothing(t *testing.T) {
	fn := newSeqFn()
	srv := newRestartable(t, fn)
	srv.start()
	var logs logBuffer
	c, err := NewClient(Options{Workers: 64, Seed: 1, StuckAfter: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := newTestFunction(t, c, outageEndpoint(srv.url()))
	e := openSeqEngine(t, t.TempDir(), f)
	defer e.Close()
	ctx := context.Background()
	direct := []string{"a0", "a1", "a2", "a3"}
	forwarded := []string{"b0", "b1"}
	const before, total = 10, 30
	for _, id := range direct {
		if err := e.SendBatch(ctx, seqBatch(seqAddr(id), 1, before)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range forwarded {
		if err := e.SendBatch(ctx, seqBatch(engine.Address{Namespace: "fwd", Type: "f", ID: id}, 1, before)); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, e)

	srv.stop()
	down := time.Now()
	var acked atomic.Int64
	errs := make(chan error, len(direct))
	for _, id := range direct {
		go func(id string) {
			// Later messages of each address, in one ordered batch.
			err := e.SendBatch(ctx, seqBatch(seqAddr(id), before+1, total))
			acked.Add(1)
			errs <- err
		}(id)
	}
	for _, id := range forwarded {
		// Acknowledged once fwd's records are durable; the forwarded
		// messages are internal and wait for the endpoint.
		if err := e.SendBatch(ctx, seqBatch(engine.Address{Namespace: "fwd", Type: "f", ID: id}, before+1, total)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the endpoint to be reported stuck", func() bool { return len(c.Stuck()) == 1 })
	h := c.Stuck()[0]
	if h.Endpoint != "test/*" || h.URL != srv.url()+"/{function.name}" || h.ConsecutiveFailures < 1 || h.RetryingBatches < 1 ||
		h.StuckSince.Before(down) || !strings.Contains(h.LastError, srv.addr) {
		t.Fatalf("stuck endpoint %+v", h)
	}
	if v := gaugeValue(t, c.metrics.stuck, "test/*"); v != 1 {
		t.Fatalf("stuck gauge %v", v)
	}
	if v := gaugeValue(t, c.metrics.retrying, "test/*"); v < 1 {
		t.Fatalf("retrying gauge %v", v)
	}
	if v := counterValue(t, c.metrics.failures, "test/*", failConnect); v < 1 {
		t.Fatalf("connect failures %v", v)
	}
	time.Sleep(4*time.Second - time.Since(down)) // a real outage, longer than the old 3.5 s budget
	if n := acked.Load(); n != 0 {
		t.Fatalf("%d ingress batches acknowledged while their function was down", n)
	}
	srv.start()
	for range direct {
		if err := <-errs; err != nil {
			t.Fatalf("ingress batch: %v", err)
		}
	}
	drain(t, e)
	for _, id := range append(direct, forwarded...) {
		if last, ok := lastOf(t, e, id); !ok || last != total {
			t.Errorf("%s: last applied %d (present %v), want %d", id, last, ok, total)
		}
	}
	fn.check(t)
	if dl := deadLetters(t, e); len(dl) != 0 {
		t.Fatalf("%d dead letters: %v", len(dl), dl)
	}
	if s := c.Stuck(); len(s) != 0 {
		t.Fatalf("still stuck after recovery: %+v", s)
	}
	if v := gaugeValue(t, c.metrics.stuck, "test/*"); v != 0 {
		t.Fatalf("stuck gauge %v after recovery", v)
	}
	if v := counterValue(t, c.metrics.batches, "test/*", outcomeFailed); v != 0 {
		t.Fatalf("%v batches failed", v)
	}
	if n, m := logs.count("remote endpoint stuck"), logs.count("remote endpoint recovered"); n != 1 || m != 1 {
		t.Fatalf("%d stuck and %d recovered log lines, want one each:\n%s", n, m, logs.b.String())
	}
}

// TestRetryingAddressHoldsItsLaterMessages: while one address's batch is
// retried, that address's later messages wait behind it (never sent ahead
// or beside it), and the other addresses of the same endpoint keep being
// served.
func TestRetryingAddressHoldsItsLaterMessages(t *testing.T) {
	fn := newSeqFn()
	heal := make(chan struct{})
	fn.failFor = func(id string) int {
		if id != "stuck" {
			return 0
		}
		select {
		case <-heal:
			return 0
		default:
			return http.StatusServiceUnavailable
		}
	}
	srv := newRestartable(t, fn)
	srv.start()
	c := newTestClient(t)
	f := newTestFunction(t, c, outageEndpoint(srv.url()))
	e := openSeqEngine(t, "", f)
	defer e.Close()
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- e.SendBatch(ctx, seqBatch(seqAddr("stuck"), 1, 1)) }()
	waitUntil(t, "the first batch to be retried", func() bool { return len(fn.requestsFor("stuck")) >= 3 })
	go func() { errs <- e.SendBatch(ctx, seqBatch(seqAddr("stuck"), 2, 5)) }()
	for i := int64(1); i <= 20; i++ {
		if err := e.SendBatch(ctx, seqBatch(seqAddr("free"), i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if last, _ := lastOf(t, e, "free"); last != 20 {
		t.Fatalf("free: last %d, want 20", last)
	}
	n := len(fn.requestsFor("stuck"))
	waitUntil(t, "more retries", func() bool { return len(fn.requestsFor("stuck")) > n+2 })
	close(heal)
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	drain(t, e)
	if last, _ := lastOf(t, e, "stuck"); last != 5 {
		t.Fatalf("stuck: last %d, want 5", last)
	}
	fn.check(t)
	reqs := fn.requestsFor("stuck")
	var firsts int
	for _, r := range reqs {
		if len(r) == 1 && r[0] == 1 {
			firsts++
			continue
		}
		if r[0] == 1 || firsts == 0 {
			t.Fatalf("a later message went with or ahead of the retried batch: %v", reqs)
		}
	}
	if firsts < n {
		t.Fatalf("%d requests of the first batch, want at least %d: %v", firsts, n, reqs)
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if m := fn.maxInfl["stuck"]; m != 1 {
		t.Fatalf("%d requests of one address in flight at once, want 1", m)
	}
	if dl := deadLetters(t, e); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}

// TestDownEndpointDoesNotStarveOthers: an endpoint whose attempts hang
// until they time out, with more batches than the pool has workers, does
// not keep the other endpoint from being served: waiting for a retry holds
// no worker, and a down endpoint gets one attempt at a time.
func TestDownEndpointDoesNotStarveOthers(t *testing.T) {
	downSrv := newFnServer(t, func(_ int, r *http.Request, _ *pb.ToFunction_InvocationBatchRequest) reply {
		<-r.Context().Done() // never answers; the client's attempt times out
		return reply{status: 500}
	})
	upSrv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply {
		return reply{from: okResult()}
	})
	c, err := NewClient(Options{Workers: 4, Seed: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	down := testEndpoint(downSrv.srv.URL)
	down.Namespace = "down"
	down.ReadTimeout = 200 * time.Millisecond // response header timeout: one attempt
	down.CallTimeout = time.Minute
	down.MaxRetries = 1000
	down.MaxConcurrency = 16
	up := testEndpoint(upSrv.srv.URL)
	up.Namespace = "up"
	fd := newTestFunction(t, c, down)
	fu := newTestFunction(t, c, up)
	var downDone atomic.Int64
	for i := 0; i < 16; i++ {
		fd.InvokeBatch(oneBatch(), func(*engine.RemoteResult) { downDone.Add(1) })
	}
	health := func(ep string) EndpointHealth {
		for _, h := range c.Health() {
			if h.Endpoint == ep {
				return h
			}
		}
		t.Fatalf("no health for %s", ep)
		return EndpointHealth{}
	}
	waitUntil(t, "the endpoint to be seen down", func() bool { return health("down/*").ConsecutiveFailures >= probeAfter })
	results := make(chan *engine.RemoteResult, 40)
	for i := 0; i < 40; i++ {
		fu.InvokeBatch(oneBatch(), func(r *engine.RemoteResult) { results <- r })
	}
	for i := 0; i < 40; i++ {
		select {
		case r := <-results:
			if r.Err != nil || len(r.Egress) != 1 {
				t.Fatalf("healthy endpoint: %+v", r)
			}
		case <-time.After(20 * time.Second): // hang guard
			t.Fatalf("the healthy endpoint starved: %d of 40 calls done; down endpoint %+v", i, health("down/*"))
		}
	}
	if n := downDone.Load(); n != 0 {
		t.Fatalf("%d calls to the down endpoint ended; they must keep retrying", n)
	}
	waitUntil(t, "one probe at a time", func() bool { return health("down/*").InFlight <= 1 })
}

// TestNonHealableFailuresDeadLetterAtOnce: a 4xx, an answer that is not
// protobuf, and an answer that breaks the protocol (a mutation of an
// undeclared state) dead-letter their message after one attempt, even
// with retries unbounded.
func TestNonHealableFailuresDeadLetterAtOnce(t *testing.T) {
	fn := newSeqFn()
	fn.failFor = func(id string) int {
		if id == "4xx" {
			return http.StatusBadRequest
		}
		return 0
	}
	undeclared, _ := proto.Marshal(result(&pb.FromFunction_InvocationResponse{StateMutations: []*pb.FromFunction_PersistedValueMutation{{
		MutationType: pb.FromFunction_PersistedValueMutation_MODIFY, StateName: "nope", StateValue: tv(engine.TypeLong, nil)}}}))
	fn.badFor = func(id string) []byte {
		switch id {
		case "garbage":
			return []byte{0xff, 0xff, 0xff}
		case "undeclared":
			return undeclared
		}
		return nil
	}
	srv := newRestartable(t, fn)
	srv.start()
	c := newTestClient(t)
	ep := outageEndpoint(srv.url())
	ep.MaxRetries = 5 // a bound would not matter either
	f := newTestFunction(t, c, ep)
	e := openSeqEngine(t, "", f)
	defer e.Close()
	ids := []string{"4xx", "garbage", "undeclared"}
	for _, id := range ids {
		if err := e.SendBatch(context.Background(), seqBatch(seqAddr(id), 1, 1)); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, e)
	dl := deadLetters(t, e)
	if len(dl) != len(ids) {
		t.Fatalf("%d dead letters, want %d: %v", len(dl), len(ids), dl)
	}
	for _, id := range ids {
		if n := len(fn.requestsFor(id)); n != 1 {
			t.Errorf("%s: %d attempts, want 1", id, n)
		}
		found := false
		for _, d := range dl {
			var rec struct{ Target, Error string }
			if json.Unmarshal([]byte(d), &rec) == nil && rec.Target == "test/seq/"+id && strings.Contains(rec.Error, "not retryable") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no dead letter saying why: %v", id, dl)
		}
	}
}

// TestGiveUpAfter: with giveUpAfter, a batch that keeps failing is
// dead-lettered once that long has passed since its first failed attempt,
// not before and not after a retry count.
func TestGiveUpAfter(t *testing.T) {
	srv := newFnServer(t, func(int, *http.Request, *pb.ToFunction_InvocationBatchRequest) reply {
		return reply{status: http.StatusBadGateway}
	})
	c := newTestClient(t)
	ep := outageEndpoint(srv.srv.URL)
	ep.GiveUpAfter = 300 * time.Millisecond
	f := newTestFunction(t, c, ep)
	start := time.Now()
	res := invoke(t, f, oneBatch())
	took := time.Since(start)
	if res.Err == nil || !errors.Is(res.Err, ErrGaveUp) || !strings.Contains(res.Err.Error(), "giveUpAfter 300ms") || !strings.Contains(res.Err.Error(), "HTTP 502") {
		t.Fatalf("got %+v", res)
	}
	if took < ep.GiveUpAfter {
		t.Fatalf("gave up after %v, before giveUpAfter %v", took, ep.GiveUpAfter)
	}
	if n := srv.calls.Load(); n < 3 {
		t.Fatalf("%d attempts; want retries until the deadline", n)
	}
	if v := counterValue(t, c.metrics.batches, "test/*", outcomeFailed); v != 1 {
		t.Fatalf("failed batches %v", v)
	}
}

// TestCloseDuringOutageLeavesMessagesForNextOpen: closing the engine (or
// the client first) while an endpoint is down ends at once, dead-letters
// nothing, answers the ingress message that was not processed with an
// error that says so (ErrClosed: send again), and leaves the internal
// messages in flight: reopened with the endpoint up, they are applied
// exactly once, in order.
func TestCloseDuringOutageLeavesMessagesForNextOpen(t *testing.T) {
	for _, clientFirst := range []bool{false, true} {
		t.Run(fmt.Sprint("clientFirst=", clientFirst), func(t *testing.T) {
			fn := newSeqFn()
			srv := newRestartable(t, fn) // down
			dir := t.TempDir()
			c1, err := NewClient(Options{Workers: 8, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			f1 := newTestFunction(t, c1, outageEndpoint(srv.url()))
			e := openSeqEngine(t, dir, f1)
			ctx := context.Background()
			if err := e.SendBatch(ctx, seqBatch(engine.Address{Namespace: "fwd", Type: "f", ID: "b0"}, 1, 10)); err != nil {
				t.Fatal(err)
			}
			direct := make(chan error, 1)
			go func() { _, err := e.Send(ctx, seqAddr("direct"), engine.Int64(1)); direct <- err }()
			waitUntil(t, "both addresses retrying", func() bool { return c1.Health()[0].RetryingBatches == 2 })
			closed := make(chan error, 1)
			go func() {
				if clientFirst {
					_ = c1.Close()
				}
				closed <- e.Close()
			}()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second): // hang guard
				t.Fatal("engine Close hangs while the endpoint is down")
			}
			err = <-direct
			if !errors.Is(err, engine.ErrClosed) || errors.Is(err, engine.ErrFailed) || !strings.Contains(err.Error(), "not processed") {
				t.Fatalf("ingress message cut off by Close: %v; want ErrClosed saying it was not processed", err)
			}
			if v := counterValue(t, c1.metrics.batches, "test/*", outcomeFailed); v != 0 {
				t.Fatalf("%v batches dead-lettered", v)
			}

			srv.start()
			c2 := newTestClient(t)
			e2 := openSeqEngine(t, dir, newTestFunction(t, c2, outageEndpoint(srv.url())))
			defer e2.Close()
			if r := e2.Recovery(); r.Pending != 10 {
				t.Fatalf("restored %d in-flight messages, want the 10 forwarded ones", r.Pending)
			}
			drain(t, e2)
			if last, _ := lastOf(t, e2, "b0"); last != 10 {
				t.Fatalf("b0: last %d after reopening, want 10; requests %v violations %v", last, fn.requestsFor("b0"), fn.violations)
			}
			if _, ok := lastOf(t, e2, "direct"); ok {
				t.Fatal("the ingress message answered 'not processed' was applied")
			}
			fn.check(t)
			if dl := deadLetters(t, e2); len(dl) != 0 {
				t.Fatalf("dead letters: %v", dl)
			}
		})
	}
}

// TestStuckEndpointHealthAndRecovery: Health, the gauges and one log line
// each way follow an endpoint that is down and comes back.
func TestStuckEndpointHealthAndRecovery(t *testing.T) {
	fn := newSeqFn()
	srv := newRestartable(t, fn) // down
	var logs logBuffer
	c, err := NewClient(Options{Workers: 8, StuckAfter: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := newTestFunction(t, c, outageEndpoint(srv.url()))
	b := oneBatch()
	b.Target.Type = "seq"
	b.States = []engine.StateValue{{Spec: lastSpec}}
	b.Invocations[0].Message = engine.Int64(1)
	ch := make(chan *engine.RemoteResult, 1)
	start := time.Now()
	f.InvokeBatch(b, func(r *engine.RemoteResult) { ch <- r })
	// Stuck after StuckAfter, and probing once probeAfter attempts failed (on
	// a loaded machine the first can come before the second).
	waitUntil(t, "stuck", func() bool { return len(c.Stuck()) == 1 && c.Health()[0].ConsecutiveFailures >= probeAfter })
	h := c.Health()[0]
	if !h.Stuck || h.StuckSince.Before(start) || h.ConsecutiveFailures < probeAfter || h.RetryingBatches != 1 || h.LastError == "" || h.LastFailure.IsZero() {
		t.Fatalf("health %+v", h)
	}
	if logs.count("remote endpoint stuck") != 1 {
		t.Fatalf("log:\n%s", logs.b.String())
	}
	srv.start()
	var r *engine.RemoteResult
	select {
	case r = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not sent once the endpoint answered")
	}
	if r.Err != nil || len(r.Mutations) != 1 {
		t.Fatalf("result %+v", r)
	}
	// The result may be delivered before the health accounting of the same
	// answer is visible: wait for it (hang guard only).
	waitUntil(t, "health after recovery", func() bool {
		h = c.Health()[0]
		return !h.Stuck && h.ConsecutiveFailures == 0 && h.RetryingBatches == 0 && h.StuckSince.IsZero()
	})
	if gaugeValue(t, c.metrics.stuck, "test/*") != 0 || gaugeValue(t, c.metrics.retrying, "test/*") != 0 {
		t.Fatal("gauges not reset")
	}
	if logs.count("remote endpoint stuck") != 1 || logs.count("remote endpoint recovered") != 1 {
		t.Fatalf("log:\n%s", logs.b.String())
	}
}
