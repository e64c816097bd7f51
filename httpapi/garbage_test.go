package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var counterN = engine.ValueSpec{Name: "n", Type: engine.TypeLong}

// counterSpec is test/counter: every message adds one to its state n.
func counterSpec() engine.FunctionSpec {
	return engine.FunctionSpec{
		Namespace: "test", Type: "counter",
		States: []engine.ValueSpec{counterN},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			n, _, err := ctx.GetInt64(counterN)
			if err != nil {
				return err
			}
			return ctx.SetInt64(counterN, n+1)
		}),
	}
}

// TestGarbageResilience throws garbage at a running server (random bytes,
// truncated, oversized and slow requests, half-open connections; bounded
// counts, loopback only) while well-formed clients send to counters, then
// checks that the server still answers correctly and that every 202'd
// message's effect is in the counters' durable state.
func TestGarbageResilience(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	e, err := engine.Open(engine.Options{DataDir: t.TempDir(), Shards: 2, CheckpointInterval: 200 * time.Millisecond,
		Logger: quietLogger()}, counterSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := New(Options{MaxBodyBytes: 4096, ReadTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4096,
		Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)

	var g goodTraffic
	var wg sync.WaitGroup
	g.send(t, ing, &wg)
	held := sendGarbage(t, strings.TrimPrefix(ing, "http://"), seed)
	wg.Wait()
	for _, c := range held {
		c.Close()
	}

	// Still up and answering correctly.
	r := do(t, "POST", ing+"/test/counter/final", "application/vnd.test/inc", "{}")
	if r.status != 202 {
		t.Fatalf("after garbage: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", ing+"/test/counter", "application/vnd.test/inc", "{}"); r.status != 400 {
		t.Fatalf("after garbage, bad path: %d", r.status)
	}
	g.check(t, e)
}

const garbageCounters = 10

// goodTraffic is TestGarbageResilience's well-formed traffic: increments
// of counters c-0 to c-9, acknowledged or without an answer.
type goodTraffic struct {
	acked   [garbageCounters]atomic.Int64
	unknown [garbageCounters]atomic.Int64 // no answer: may or may not be applied
}

// send starts four clients of 60 increments each, counted in wg.
func (g *goodTraffic) send(t *testing.T, ing string, wg *sync.WaitGroup) {
	const counters = garbageCounters
	client := &http.Client{Timeout: 10 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				c := (w*60 + i) % counters
				r, err := client.Post(fmt.Sprintf("%s/test/counter/c-%d", ing, c), "application/vnd.test/inc", strings.NewReader("{}"))
				if err != nil {
					g.unknown[c].Add(1)
					continue
				}
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
				switch r.StatusCode {
				case 202:
					g.acked[c].Add(1)
				case 503: // overloaded: not accepted
				default:
					t.Errorf("good request answered %d", r.StatusCode)
				}
			}
		}()
	}
}

// sendGarbage connects to host and sends garbage of each kind (random
// bytes, truncated and oversized bodies, oversized headers, malformed
// request lines, slow writers), each kind bounded, while 20 half-open
// connections are held; it returns once the garbage is sent, with the
// half-open connections for the caller to close.
func sendGarbage(t *testing.T, host string, seed uint64) []net.Conn {
	var badWG sync.WaitGroup
	attack := func(n int, f func(r *rand.Rand, c net.Conn)) {
		badWG.Add(1)
		go func() {
			defer badWG.Done()
			r := rand.New(rand.NewPCG(seed, uint64(n)))
			for i := 0; i < n; i++ {
				c, err := net.DialTimeout("tcp", host, 10*time.Second)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				f(r, c)
				c.Close()
			}
		}()
	}
	readStatus := func(c net.Conn) int {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	attack(40, func(r *rand.Rand, c net.Conn) { // random bytes
		b := make([]byte, r.IntN(3000))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		_, _ = c.Write(b)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	attack(41, func(r *rand.Rand, c net.Conn) { // truncated body, then hang up
		fmt.Fprintf(c, "POST /test/counter/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/inc\r\nContent-Length: 100\r\n\r\n{\"tru")
	})
	attack(20, func(r *rand.Rand, c net.Conn) { // oversized body
		fmt.Fprintf(c, "POST /test/counter/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/inc\r\nContent-Length: 100000\r\n\r\n")
		_, _ = c.Write(make([]byte, 1000))
		if st := readStatus(c); st != 0 && st != 413 {
			t.Errorf("oversized body answered %d", st)
		}
	})
	attack(20, func(r *rand.Rand, c net.Conn) { // oversized headers
		fmt.Fprintf(c, "POST /test/counter/x HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 8000))
		if st := readStatus(c); st != 0 && st != 431 && st != 400 {
			t.Errorf("oversized header answered %d", st)
		}
	})
	attack(20, func(r *rand.Rand, c net.Conn) { // malformed request lines
		lines := []string{"GARBAGE\r\n\r\n", "POST\r\n\r\n", "POST /a/b/c HTTP/9.9\r\n\r\n", "POST /%zz/b/c HTTP/1.1\r\nHost: x\r\n\r\n",
			"POST /test/counter/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", "POST /test/counter/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}
		line := lines[r.IntN(len(lines))]
		fmt.Fprint(c, line)
		if st := readStatus(c); st != 0 && (st < 400 || st >= 500) && !(st == 505 && strings.Contains(line, "HTTP/9.9")) {
			t.Errorf("malformed request %q answered %d", line, st)
		}
	})
	attack(10, func(r *rand.Rand, c net.Conn) { // slow: one byte every 50ms, cut off by ReadTimeout
		req := "POST /test/counter/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/inc\r\nContent-Length: 2\r\n\r\n{}"
		start := time.Now()
		for i := 0; i < len(req); i++ {
			if _, err := c.Write([]byte{req[i]}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
			if time.Since(start) > 2*time.Second {
				return
			}
		}
	})
	// Half-open connections held until the garbage is done.
	var held []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	badWG.Wait()
	return held
}

// check: nothing acknowledged was lost, and nothing was applied that was
// not sent.
func (g *goodTraffic) check(t *testing.T, e *engine.Engine) {
	const counters = garbageCounters
	total := int64(0)
	for c := 0; c < counters; c++ {
		vals, err := e.State(context.Background(), engine.Address{Namespace: "test", Type: "counter", ID: fmt.Sprintf("c-%d", c)})
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, v := range vals {
			if v.Spec.Name == "n" && v.Present {
				n, err = engine.DecodeLongWrapper(v.Value)
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		a, u := g.acked[c].Load(), g.unknown[c].Load()
		if n < a || n > a+u {
			t.Errorf("counter c-%d is %d, want between %d acknowledged and %d sent", c, n, a, a+u)
		}
		total += a
	}
	if total == 0 {
		t.Fatal("no well-formed request was acknowledged")
	}
	t.Logf("%d acknowledged", total)
}
