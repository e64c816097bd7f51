package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// TestConnLimits: with MaxConns and MaxConnsPerClient, connections past the
// limits are answered 503 with Retry-After and closed (counted by reason),
// and the server serves again once connections close. Without limits every
// connection was taken until the file limit made the server exit.
func TestConnLimits(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("dials from 127.0.0.2 and 127.0.0.3: Linux loopback only")
	}
	s, err := New(Options{MaxConns: 5, MaxConnsPerClient: 3, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(newFake()); err != nil {
		t.Fatal(err)
	}
	ing, adm := testServer(t, s)
	host := strings.TrimPrefix(ing, "http://")
	_, port, _ := net.SplitHostPort(host)

	// open dials from the loopback address src and makes sure the server
	// took the connection (a request on it is answered 202).
	open := func(src string) (net.Conn, *http.Response) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "POST /test/counter/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.test/loc\r\nContent-Length: 2\r\n\r\n{}")
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("from %s: %v", src, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return c, r
	}
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c, r := open("127.0.0.1")
		if r.StatusCode != 202 {
			t.Fatalf("connection %d: %d", i, r.StatusCode)
		}
		held = append(held, c)
	}
	c, r := open("127.0.0.1")
	if r.StatusCode != 503 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("4th connection of one client: %d %v", r.StatusCode, r.Header)
	}
	c.Close()
	for _, src := range []string{"127.0.0.2", "127.0.0.2"} {
		c, r := open(src)
		if r.StatusCode != 202 {
			t.Fatalf("from %s: %d", src, r.StatusCode)
		}
		held = append(held, c)
	}
	c, r = open("127.0.0.3")
	if r.StatusCode != 503 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("6th connection: %d", r.StatusCode)
	}
	c.Close()
	if v := metricValue(t, adm, `shardfn_ingress_connections_refused_total{reason="per_client"}`); v != 1 {
		t.Errorf("per-client refusals %v, want 1", v)
	}
	if v := metricValue(t, adm, `shardfn_ingress_connections_refused_total{reason="total"}`); v != 1 {
		t.Errorf("total refusals %v, want 1", v)
	}
	if v := metricValue(t, adm, `shardfn_ingress_connections`); v != 5 {
		t.Errorf("open connections %v, want 5", v)
	}
	for _, c := range held {
		c.Close()
	}
	// The slots come back as the server sees the connections close.
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, adm, `shardfn_ingress_connections`) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("closed connections keep their slots")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := do(t, "POST", ing+"/test/counter/a", "application/vnd.test/loc", "{}"); r.status != 202 {
		t.Fatalf("after the limits: %d %s", r.status, r.body)
	}
}

func TestDefaultConnLimits(t *testing.T) {
	for _, c := range []struct{ nofile, total, per int }{
		{20000, 17952, 4488},
		{1024, 768, 192},
		{100, 36, 9},
		{1 << 20, 65536, 16384},
		{0, 3072, 768},
	} {
		if total, per := DefaultConnLimits(c.nofile); total != c.total || per != c.per {
			t.Errorf("DefaultConnLimits(%d) = %d, %d; want %d, %d", c.nofile, total, per, c.total, c.per)
		}
	}
	var o Options
	o.EnsureDefaults()
	if n := FileLimit(); n > 0 && o.MaxConns >= n {
		t.Errorf("default MaxConns %d is not below the file limit %d", o.MaxConns, n)
	}
}

// TestAcceptEMFILE runs a server in a child process whose file limit is
// lower than its connection limit, exhausts the descriptors with
// connections, and checks that the server survives: it counts EMFILE,
// backs off, and answers once the connections close. fasthttp used to treat
// the accept error as fatal and the server exited.
func TestAcceptEMFILE(t *testing.T) {
	if os.Getenv("HTTPAPI_EMFILE_CHILD") != "" {
		emfileChild()
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("lowers RLIMIT_NOFILE; Linux only")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptEMFILE$")
	cmd.Env = append(os.Environ(), "HTTPAPI_EMFILE_CHILD=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	sc := bufio.NewScanner(stdout)
	var ing, adm string
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "listening %s %s", &ing, &adm); err == nil {
			break
		}
	}
	if ing == "" {
		t.Fatalf("child did not start: %s", stderr.String())
	}
	go io.Copy(io.Discard, stdout)

	// The admin listener is out of descriptors too: read metrics over one
	// keep-alive connection made before.
	admClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	emfiles := func() float64 {
		t.Helper()
		r, err := admClient.Get("http://" + adm + "/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		return seriesValue(string(b), `shardfn_ingress_accept_errors_total{reason="emfile"}`)
	}
	if n := emfiles(); n != 0 {
		t.Fatalf("EMFILE before the flood: %v", n)
	}
	start := time.Now()
	// 200 connections against a limit of 64 descriptors: the kernel
	// completes them all, the child runs out of descriptors accepting.
	var conns []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.DialTimeout("tcp", ing, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for emfiles() == 0 {
		select {
		case <-exited:
			t.Fatalf("the server exited while out of descriptors: %v\n%s", exitErr, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no EMFILE counted\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("EMFILE counted after %v", time.Since(start))
	for _, c := range conns {
		c.Close()
	}
	// Once the descriptors come back, it serves again.
	deadline = time.Now().Add(30 * time.Second)
	for {
		r, err := (&http.Client{Timeout: 2 * time.Second}).Post("http://"+ing+"/test/counter/a", "application/vnd.test/loc", strings.NewReader("{}"))
		if err == nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if r.StatusCode == 202 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("the server exited: %v\n%s", exitErr, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after the connections closed: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("serving again after %v", time.Since(start))
	stdin.Close() // the child stops cleanly
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("child: %v\n%s", exitErr, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not stop")
	}
}

// emfileChild is the child of TestAcceptEMFILE: a server with a connection
// limit far above its file limit of 64, serving until stdin closes.
func emfileChild() {
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		os.Exit(2)
	}
	s, err := New(Options{MaxConns: 1000, MaxConnsPerClient: 1000, Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := s.SetEngine(newFake()); err != nil {
		os.Exit(2)
	}
	ln1, err1 := net.Listen("tcp", "127.0.0.1:0")
	ln2, err2 := net.Listen("tcp", "127.0.0.1:0")
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, err1, err2)
		os.Exit(2)
	}
	go func() {
		err := s.ServeIngress(ln1)
		fmt.Fprintln(os.Stderr, "ingress stopped serving:", err)
		os.Exit(3)
	}()
	go func() { _ = s.ServeAdmin(ln2) }()
	fmt.Printf("listening %s %s\n", ln1.Addr(), ln2.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.ShutdownAdmin(ctx)
	// Stop without waiting for the ingress: it is fine to exit now.
	os.Exit(0)
}

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
