package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
)

// rawAnswer sends req on a new connection and reads one answer (the
// status line and headers, and the body when it has a length).
func rawAnswer(t *testing.T, host, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", clip([]byte(req)), err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	return r, string(b)
}

func metricValue(t *testing.T, admin, series string) float64 {
	t.Helper()
	r := do(t, "GET", admin+"/metrics", "", "")
	return seriesValue(r.body, series)
}

func seriesValue(metrics, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestSmallHoles covers the smaller holes of issue 10 on the HTTP layer.
func TestSmallHoles(t *testing.T) {
	s, err := New(Options{MaxBodyBytes: 4096, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	host := strings.TrimPrefix(ing, "http://")

	// HTTP/9.9 is refused (it used to be served as HTTP/1.0).
	r, body := rawAnswer(t, host, "POST /test/counter/v HTTP/9.9\r\nHost: x\r\nContent-Type: application/vnd.test/loc\r\nContent-Length: 2\r\n\r\n{}")
	if r.StatusCode != 505 || !strings.Contains(body, "HTTP/1.1") || f.counts["test/counter/v"] != 0 {
		t.Fatalf("HTTP/9.9: %d %s", r.StatusCode, body)
	}

	// A 400 does not echo the request (2 KB of garbage made a 7.7 KB
	// answer).
	garbage := "\x01GARBAGE" + strings.Repeat("<script>zz", 200) + "\r\n\r\n"
	r, body = rawAnswer(t, host, garbage)
	if r.StatusCode != 400 || len(body) > 300 || strings.Contains(body, "script") || strings.Contains(body, "GARBAGE") {
		t.Fatalf("garbage: %d, %d bytes: %s", r.StatusCode, len(body), body)
	}
	r, body = rawAnswer(t, host, "POST /a/b/c HTTP/1.1\r\nHost: x\r\nBad Header With Spaces "+strings.Repeat("q", 1000)+"\r\n\r\n")
	if r.StatusCode != 400 || strings.Contains(body, "qqqq") {
		t.Fatalf("bad header: %d %s", r.StatusCode, body)
	}

	// curl -d sends application/x-www-form-urlencoded: a string message.
	if r := do(t, "POST", ing+"/test/counter/s", "application/x-www-form-urlencoded", "hello"); r.status != 202 {
		t.Fatalf("curl -d: %d %s", r.status, r.body)
	}
	if v, err := f.last["test/counter/s"].AsString(); err != nil || v != "hello" || f.last["test/counter/s"].Type != engine.TypeString {
		t.Fatalf("curl -d body: %q %v", v, err)
	}
	if r := do(t, "POST", ing+"/test/counter/s", "text/plain; charset=utf-8", "hi"); r.status != 202 {
		t.Fatalf("text/plain: %d %s", r.status, r.body)
	}

	// Batch member names are exact-case and given once; "TO" is not "to".
	for _, line := range []string{
		`{"to":"test/counter/x","TO":"test/counter/y","type":"test/loc","body":{}}`,
		`{"to":"test/counter/x","to":"test/counter/y","type":"test/loc","body":{}}`,
		`{"To":"test/counter/x","type":"test/loc","body":{}}`,
	} {
		r := do(t, "POST", ing+"/batch", "application/x-ndjson", line)
		if r.status != 400 || !strings.Contains(errorBody(t, r), "message 0 (line 1)") {
			t.Errorf("batch %s: %d %s", line, r.status, r.body)
		}
	}
	if f.counts["test/counter/y"] != 0 || f.counts["test/counter/x"] != 0 {
		t.Fatalf("a refused batch line was sent: %v", f.counts)
	}
}

// TestBatchNumbering: parse errors and engine errors name a batch's
// message the same way, "message N" from 0, with the line for JSON (one
// said "line 501" and the other "message 500" for the same message).
func TestBatchNumbering(t *testing.T) {
	e, err := engine.Open(engine.Options{Shards: 1, Logger: quietLogger()}, counterSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	batch := func(last string) string {
		var b strings.Builder
		b.WriteString("\n") // a blank line: not a message
		for i := 0; i < 500; i++ {
			fmt.Fprintf(&b, `{"to":"test/counter/n%d","type":"test/inc","body":{}}`+"\n", i)
		}
		return b.String() + last + "\n"
	}
	r := do(t, "POST", ing+"/batch", "", batch(`{"to":"test/counter/x","type":"test/inc","body":{}`))
	if msg := errorBody(t, r); r.status != 400 || !strings.Contains(msg, "message 500 (line 502)") {
		t.Fatalf("parse error: %d %s", r.status, msg)
	}
	r = do(t, "POST", ing+"/batch", "", batch(`{"to":"nope/counter/x","type":"test/inc","body":{}}`))
	if msg := errorBody(t, r); r.status != 404 || !strings.Contains(msg, "message 500:") {
		t.Fatalf("engine error: %d %s", r.status, msg)
	}
	var bin []byte
	for i := 0; i < 3; i++ {
		for _, f := range []string{"test/counter/b", "bad type", "{}"} {
			bin = append(bin, byte(len(f)))
			bin = append(bin, f...)
		}
	}
	r = do(t, "POST", ing+"/batch", contentTypeBatch, string(bin))
	if msg := errorBody(t, r); r.status != 400 || !strings.Contains(msg, "message 0:") {
		t.Fatalf("binary batch error: %d %s", r.status, msg)
	}
}

// TestStateOfUnknownType: /state of an unregistered function type is a
// 404 naming it (it was 200 {}), and a registered type lists its unset
// values as "present":false, as the documentation promised.
func TestStateOfUnknownType(t *testing.T) {
	e, err := engine.Open(engine.Options{Shards: 1, Logger: quietLogger()}, counterSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	_, adm := testServer(t, s)
	r := do(t, "GET", adm+"/state/other/thing/1", "", "")
	if msg := errorBody(t, r); r.status != 404 || !strings.Contains(msg, "other/thing") {
		t.Fatalf("unknown type: %d %s", r.status, r.body)
	}
	r = do(t, "GET", adm+"/state/test/counter/never", "", "")
	want := `{"address":"test/counter/never","state":{"n":{"type":"io.statefun.types/long","present":false}}}` + "\n"
	if r.status != 200 || r.body != want {
		t.Fatalf("unset state: %d %s, want %s", r.status, r.body, want)
	}
}

// TestIngressTypeRefused: the 17-byte rides/find of issue 10, sent to a
// geocell from ingress, is answered 400 naming what the type accepts (it
// used to be accepted and wedged the shard); the shard keeps serving.
func TestIngressTypeRefused(t *testing.T) {
	e, err := engine.Open(engine.Options{Shards: 2, Logger: quietLogger()}, rides.Specs()...)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	find := []byte{2, 'r', '1', 3, '5', '-', '5', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}
	r := do(t, "POST", ing+"/rides/geocell/5-5", "application/vnd.rides/find", string(find))
	if msg := errorBody(t, r); r.status != 400 || !strings.Contains(msg, "rides/geocell takes no messages from ingress") {
		t.Fatalf("find from ingress: %d %s", r.status, msg)
	}
	r = do(t, "POST", ing+"/rides/driver/d-1", "application/vnd.rides/offer", "x")
	if msg := errorBody(t, r); r.status != 400 || !strings.Contains(msg, "accepts rides/location from ingress") {
		t.Fatalf("offer from ingress: %d %s", r.status, msg)
	}
	if r := do(t, "POST", ing+"/rides/driver/d-1", "application/vnd.rides/location", `{"cell":"5-5"}`); r.status != 202 {
		t.Fatalf("location: %d %s", r.status, r.body)
	}
	r = do(t, "POST", ing+"/rides/passenger/p-1?wait=10s", "application/vnd.rides/request", `{"cell":"5-5"}`)
	var o struct{ Driver string }
	if r.status != 200 || json.Unmarshal([]byte(r.body), &o) != nil || o.Driver != "d-1" {
		t.Fatalf("request after the refused find: %d %s", r.status, r.body)
	}
}

// TestEgressByteCap: an egress answer holds at most MaxEgressBytes of
// records, next continues where it stopped, and a larger record comes
// alone. Reads used to be capped by record count only (one answered 224 MB).
func TestEgressByteCap(t *testing.T) {
	const kb = 1 << 10
	sizes := []int{300, 300, 300, 2000, 300}
	writer := engine.FunctionSpec{Namespace: "test", Type: "writer", Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
		for i, n := range sizes {
			ctx.Egress("big", engine.Message{Type: "test/blob", Value: []byte(fmt.Sprintf("%q", fmt.Sprint(i, strings.Repeat("x", n*kb))))})
		}
		return nil
	})}
	e, err := engine.Open(engine.Options{Shards: 1, DataDir: t.TempDir(), Logger: quietLogger()}, writer)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := New(Options{MaxEgressBytes: 700 * kb, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ing, _ := testServer(t, s)
	if r := do(t, "POST", ing+"/test/writer/1", "application/vnd.test/go", "{}"); r.status != 202 {
		t.Fatalf("write: %d %s", r.status, r.body)
	}
	var counts []int
	from := 0
	for from < len(sizes) {
		r := do(t, "GET", fmt.Sprintf("%s/egress/big?from=%d&max=100&wait=5s", ing, from), "", "")
		var a struct {
			Records []struct{ Offset int }
			Next    int
		}
		if err := json.Unmarshal([]byte(r.body), &a); err != nil || r.status != 200 || len(a.Records) == 0 {
			t.Fatalf("read from %d: %d %v", from, r.status, err)
		}
		if len(a.Records) > 1 && len(r.body) > 700*kb*4/3+4*kb {
			t.Fatalf("answer of %d bytes over the cap", len(r.body))
		}
		if a.Records[0].Offset != from || a.Next != from+len(a.Records) {
			t.Fatalf("read from %d: first %d next %d", from, a.Records[0].Offset, a.Next)
		}
		counts = append(counts, len(a.Records))
		from = a.Next
	}
	if fmt.Sprint(counts) != "[2 1 1 1]" {
		t.Fatalf("records per answer %v, want [2 1 1 1]", counts)
	}
}

// TestDrainingNotReady: once shutdown starts, /ready and /health answer 503
// while requests in flight drain (they used to answer 200).
func TestDrainingNotReady(t *testing.T) {
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := &blockingEngine{fakeEngine: newFake(), release: make(chan struct{})}
	if err := s.SetEngine(b); err != nil {
		t.Fatal(err)
	}
	ing, adm := testServer(t, s)
	done := make(chan int, 1)
	go func() { done <- do(t, "POST", ing+"/test/counter/a", "application/vnd.test/loc", "{}").status }()
	for b.entered.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if r := do(t, "GET", adm+"/ready", "", ""); r.status != 200 {
		t.Fatalf("ready before shutdown: %d", r.status)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- s.ShutdownIngress(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := do(t, "GET", adm+"/ready", "", "")
		h := do(t, "GET", adm+"/health", "", "")
		if r.status == 503 && h.status == 503 && strings.Contains(h.body, "draining") && strings.Contains(errorBody(t, r), "shutting down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("while draining: ready %d %s, health %d %s", r.status, r.body, h.status, h.body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(b.release)
	if st := <-done; st != 202 {
		t.Fatalf("request in flight answered %d", st)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
