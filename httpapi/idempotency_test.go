package httpapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// ingressServer serves e's ingress on a loopback listener.
func ingressServer(t *testing.T, e *engine.Engine) (*Server, string) {
	t.Helper()
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeIngress(ln) }()
	t.Cleanup(func() { _ = s.ShutdownIngress(context.Background()) })
	return s, "http://" + ln.Addr().String()
}

func post(t *testing.T, url, ct, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", ct)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String(), resp.Header
}

// An HTTP client that resends with the same Idempotency-Key gets the first
// answer and the message is applied once; batch lines take a "key" too.
func TestIdempotencyKeyOverHTTP(t *testing.T) {
	count := engine.ValueSpec{Name: "count", Type: engine.TypeLong}
	e, err := engine.Open(engine.Options{Shards: 2, Logger: quietLogger()}, engine.FunctionSpec{
		Namespace: "ops", Type: "fn", States: []engine.ValueSpec{count},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			n, _, _ := ctx.GetInt64(count)
			return ctx.SetInt64(count, n+1)
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, url := ingressServer(t, e)
	hdr := map[string]string{"Idempotency-Key": "pay-7"}
	code1, body1, _ := post(t, url+"/ops/fn/k", "application/vnd.t/inc", "", hdr)
	code2, body2, _ := post(t, url+"/ops/fn/k", "application/vnd.t/inc", "", hdr)
	if code1 != 202 || code2 != 202 || body1 != body2 {
		t.Fatalf("first %d %s, second %d %s: want the same 202", code1, body1, code2, body2)
	}
	batch := `{"to":"ops/fn/k","type":"t/inc","key":"line-1"}` + "\n" + `{"to":"ops/fn/k","type":"t/inc","key":"line-2"}` + "\n"
	for i := 0; i < 2; i++ {
		if code, body, _ := post(t, url+"/batch", "application/x-ndjson", batch, nil); code != 202 {
			t.Fatalf("batch: %d %s", code, body)
		}
	}
	vals, err := e.State(context.Background(), engine.Address{Namespace: "ops", Type: "fn", ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if v.Spec.Name == "count" {
			if n, _ := engine.DecodeLongWrapper(v.Value); n != 3 {
				t.Fatalf("count %d after two sends of each keyed message, want 3", n)
			}
		}
	}
	if code, body, _ := post(t, url+"/ops/fn/k", "application/vnd.t/inc", "", map[string]string{"Idempotency-Key": strings.Repeat("x", 300)}); code != 400 || !strings.Contains(body, "idempotency key") {
		t.Fatalf("an overlong key: %d %s", code, body)
	}
}

// Bug 12 of the review: requests waiting for their reply when the server
// shut down had been processed, yet were answered 503 "retry", inviting a
// duplicate. A processed message is now answered 202: processed, reply
// unavailable.
func TestShutdownAnswersProcessedNotRetry(t *testing.T) {
	silent := engine.FunctionSpec{Namespace: "t", Type: "silent", Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
		return nil // never replies
	})}
	e, err := engine.Open(engine.Options{Shards: 2, Logger: quietLogger()}, silent)
	if err != nil {
		t.Fatal(err)
	}
	s, url := ingressServer(t, e)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, body, hdr := post(t, fmt.Sprintf("%s/t/silent/%d?wait=20s", url, i), "application/vnd.t/msg", "hi", nil)
			mu.Lock()
			answers[fmt.Sprintf("%d retry-after=%q %v", code, hdr.Get("Retry-After"), strings.Contains(body, "processed"))]++
			mu.Unlock()
		}(i)
	}
	time.Sleep(300 * time.Millisecond) // all ten processed and waiting
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_ = s.ShutdownIngress(ctx) // cuts the waiting requests off
	cancel()
	_ = e.Close()
	wg.Wait()
	if answers[`202 retry-after="" true`] != 10 {
		t.Fatalf("answers %v, want ten 202 saying processed, without Retry-After", answers)
	}
}
