package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// blockingEngine holds every Send until release is closed.
type blockingEngine struct {
	*fakeEngine
	release chan struct{}
	entered atomic.Int64
}

func (b *blockingEngine) Send(ctx context.Context, to engine.Address, msg engine.Message, _ ...engine.SendOption) (uint64, error) {
	b.entered.Add(1)
	<-b.release
	return b.fakeEngine.Send(ctx, to, msg)
}

// TestBodyBudget: bodies held at once are bounded across connections; a
// request whose body does not fit is answered 503 with Retry-After from its
// headers, before its body is sent. Before the budget every body was read
// and held.
func TestBodyBudget(t *testing.T) {
	const mb = 1 << 20
	s, err := New(Options{MaxBodyBytes: mb, MaxBodyBytesInFlight: 2 * mb, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := &blockingEngine{fakeEngine: newFake(), release: make(chan struct{})}
	if err := s.SetEngine(b); err != nil {
		t.Fatal(err)
	}
	ing, adm := testServer(t, s)
	host := strings.TrimPrefix(ing, "http://")
	big := strings.Repeat("x", mb)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = do(t, "POST", ing+"/test/counter/a", "application/vnd.test/big", big).status
		}()
	}
	for b.entered.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	if v := metricValue(t, adm, "shardfn_ingress_body_bytes_held"); v != 2*mb {
		t.Errorf("held %v, want %d", v, 2*mb)
	}
	// Headers only: the answer comes without the body being sent.
	r, body := rawAnswer(t, host, "POST /test/counter/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/big\r\nContent-Length: 1000\r\n\r\n{")
	if r.StatusCode != 503 || r.Header.Get("Retry-After") != "1" || !strings.Contains(body, "max-body-in-flight") {
		t.Fatalf("over the budget: %d %v %s", r.StatusCode, r.Header, body)
	}
	// A chunked body is refused as its buffer grows past the budget.
	r, _ = rawAnswer(t, host, "POST /batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	if r.StatusCode != 503 {
		t.Fatalf("chunked over the budget: %d", r.StatusCode)
	}
	close(b.release)
	wg.Wait()
	if codes[0] != 202 || codes[1] != 202 {
		t.Fatalf("held requests: %v", codes)
	}
	if v := metricValue(t, adm, "shardfn_ingress_body_bytes_held"); v != 0 {
		t.Errorf("held %v after the answers", v)
	}
	if r := do(t, "POST", ing+"/test/counter/a", "application/vnd.test/big", big); r.status != 202 {
		t.Fatalf("after the budget frees: %d %s", r.status, r.body)
	}
}

// TestBodyBudgetMemory: 64 clients send 1 MiB bodies at once to an engine
// that holds them; with a budget of 4 MiB the heap grows by a few MiB, not
// by the 64 MiB the bodies weigh.
func TestBodyBudgetMemory(t *testing.T) {
	const mb = 1 << 20
	s, err := New(Options{MaxBodyBytes: mb, MaxBodyBytesInFlight: 4 * mb, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := &blockingEngine{fakeEngine: newFake(), release: make(chan struct{})}
	if err := s.SetEngine(b); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	host := strings.TrimPrefix(ing, "http://")
	body := bytes.Repeat([]byte("x"), mb) // shared by the clients
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const clients = 64
	var refused, answered atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", host, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				fmt.Fprintf(c, "POST /test/counter/m HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/big\r\nContent-Length: %d\r\n\r\n", mb)
				_, _ = c.Write(body) // fails once a refused connection closes
			}()
			r, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				refused.Add(1) // reset while writing: refused too
				return
			}
			r.Body.Close()
			switch r.StatusCode {
			case 503:
				refused.Add(1)
			case 202:
				answered.Add(1)
			default:
				t.Errorf("answer %d", r.StatusCode)
			}
		}()
	}
	// Sample the heap and the budget until every refusal is in and the
	// engine holds the rest.
	var peakHeap uint64
	var peakHeld int64
	deadline := time.Now().Add(30 * time.Second)
	for refused.Load()+b.entered.Load() < clients {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peakHeap = max(peakHeap, m.HeapInuse)
		peakHeld = max(peakHeld, s.body.held.Load())
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %d refused, %d in the engine", refused.Load(), b.entered.Load())
		}
		time.Sleep(2 * time.Millisecond)
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	peakHeap = max(peakHeap, m.HeapInuse)
	close(b.release)
	wg.Wait()
	growth := int64(peakHeap) - int64(before.HeapInuse)
	t.Logf("64 x 1 MiB bodies, budget 4 MiB: %d held by the engine at once, %d refused; peak heap growth %.1f MiB, peak budget use %.1f MiB",
		b.entered.Load(), refused.Load(), float64(growth)/mb, float64(peakHeld)/mb)
	if peakHeld > 4*mb || b.entered.Load() > 4 {
		t.Fatalf("budget exceeded: %d bytes held, %d bodies in the engine", peakHeld, b.entered.Load())
	}
	if growth > 32*mb {
		t.Fatalf("heap grew by %d MiB with a 4 MiB body budget", growth/mb)
	}
	if answered.Load() != b.entered.Load() || refused.Load() == 0 {
		t.Fatalf("%d answered, %d entered, %d refused", answered.Load(), b.entered.Load(), refused.Load())
	}
}

// TestExpectContinue: "Expect: 100-continue" with a Content-Length over
// the limit is answered 413 at once, without 100 Continue (it used to get
// 100 Continue first); one that fits gets 100 Continue and its answer.
func TestExpectContinue(t *testing.T) {
	s, err := New(Options{MaxBodyBytes: 1024, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(newFake()); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	host := strings.TrimPrefix(ing, "http://")
	r, body := rawAnswer(t, host, "POST /test/counter/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/loc\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n")
	if r.StatusCode != 413 || !strings.Contains(body, "limit of 1024") {
		t.Fatalf("oversized expect-continue: %d %s", r.StatusCode, body)
	}

	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "POST /test/counter/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/loc\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("fitting expect-continue: %q", line)
	}
	_, _ = br.ReadString('\n') // blank line after 100 Continue
	fmt.Fprint(c, "{}")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("after 100 Continue: %v %v", resp, err)
	}
}
