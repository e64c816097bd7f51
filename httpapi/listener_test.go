package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
	child := startEMFILEChild(t)
	defer child.kill()

	// The admin listener is out of descriptors too: read metrics over one
	// keep-alive connection made before.
	admClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	emfiles := func() float64 {
		t.Helper()
		r, err := admClient.Get("http://" + child.adm + "/metrics")
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
		c, err := net.DialTimeout("tcp", child.ing, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	child.waitFor(t, 20*time.Second, "EMFILE counted", "the server exited while out of descriptors", func() error {
		if emfiles() == 0 {
			return errors.New("no EMFILE counted")
		}
		return nil
	})
	t.Logf("EMFILE counted after %v", time.Since(start))
	for _, c := range conns {
		c.Close()
	}
	// Once the descriptors come back, it serves again.
	child.waitFor(t, 30*time.Second, "serving again", "the server exited", func() error {
		r, err := (&http.Client{Timeout: 2 * time.Second}).Post("http://"+child.ing+"/test/counter/a", "application/vnd.test/loc", strings.NewReader("{}"))
		if err != nil {
			return fmt.Errorf("not serving after the connections closed: %v", err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 202 {
			return fmt.Errorf("not serving after the connections closed: %d", r.StatusCode)
		}
		return nil
	})
	t.Logf("serving again after %v", time.Since(start))
	child.stop(t)
}

// emfileProc is the child process of TestAcceptEMFILE.
type emfileProc struct {
	cmd      *exec.Cmd
	stdin    io.Closer
	stderr   bytes.Buffer
	exited   chan struct{}
	exitErr  error  // once exited is closed
	ing, adm string // listen addresses
}

// startEMFILEChild starts the child and waits for its listen addresses.
func startEMFILEChild(t *testing.T) *emfileProc {
	p := &emfileProc{exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestAcceptEMFILE$")
	p.cmd.Env = append(os.Environ(), "HTTPAPI_EMFILE_CHILD=1")
	p.stdin, _ = p.cmd.StdinPipe()
	stdout, _ := p.cmd.StdoutPipe()
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.exited) }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "listening %s %s", &p.ing, &p.adm); err == nil {
			break
		}
	}
	if p.ing == "" {
		p.kill()
		t.Fatalf("child did not start: %s", p.stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	return p
}

// waitFor polls cond every 50ms until it holds; it fails the test with
// cond's last error after d, or with exitedMsg if the child exits.
func (p *emfileProc) waitFor(t *testing.T, d time.Duration, what, exitedMsg string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s: %v\n%s", exitedMsg, p.exitErr, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s", what, err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop closes the child's stdin, which stops it cleanly, and waits.
func (p *emfileProc) stop(t *testing.T) {
	p.stdin.Close()
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Fatalf("child: %v\n%s", p.exitErr, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not stop")
	}
}

// kill ends the child (if it still runs) and waits for it.
func (p *emfileProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
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
