package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is one running engine process.
type server struct {
	t              *testing.T
	cmd            *exec.Cmd
	ingress, admin string // base URLs
	exited         chan struct{}
	exitErr        error

	mu   sync.Mutex
	logs []string // stderr lines
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds cmd/engine (once per test run) into a temporary
// directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shardfn-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "engine")
		// go test puts its own go command first on PATH.
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		out, err := exec.Command(goBin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startServer starts the binary on free loopback ports and waits until it
// is ready.
func startServer(t *testing.T, bin, dataDir string, extra ...string) *server {
	t.Helper()
	args := append([]string{"--data-dir", dataDir, "--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json", "--shards", "2", "--max-body", "64KiB"}, extra...)
	s := &server{t: t, cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs = append(s.logs, line)
			s.mu.Unlock()
			var m struct{ Msg, Ingress, Admin string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				addrs <- [2]string{m.Ingress, m.Admin}
			}
		}
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("server log:\n%s", strings.Join(s.logLines(), "\n"))
		}
	})
	select {
	case a := <-addrs:
		s.ingress, s.admin = "http://"+a[0], "http://"+a[1]
	case <-s.exited:
		t.Fatalf("server exited at start: %v\n%s", s.exitErr, strings.Join(s.logLines(), "\n"))
	case <-time.After(30 * time.Second):
		t.Fatal("server did not log its addresses")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if r, err := http.Get(s.admin + "/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready\n%s", strings.Join(s.logLines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *server) logLines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logs...)
}

// stop sends sig and waits for the exit.
func (s *server) stop(sig os.Signal) error {
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
		return s.exitErr
	case <-time.After(60 * time.Second):
		s.t.Fatalf("server did not exit after %v", sig)
		return nil
	}
}

type answer struct {
	status int
	ct     string
	body   []byte
}

func call(t *testing.T, method, url, ct string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return answer{r.StatusCode, r.Header.Get("Content-Type"), b}
}

type stateValue struct {
	Type    string
	Text    string
	Value   json.RawMessage
	Present *bool
}

func readState(t *testing.T, s *server, addr string) map[string]stateValue {
	t.Helper()
	a := call(t, "GET", s.admin+"/state/"+addr, "", nil)
	if a.status != 200 {
		t.Fatalf("state %s: %d %s", addr, a.status, a.body)
	}
	var st struct {
		Address string
		State   map[string]stateValue
	}
	if err := json.Unmarshal(a.body, &st); err != nil || st.Address != addr {
		t.Fatalf("state %s: %v %s", addr, err, a.body)
	}
	return st.State
}

type egressRecord struct {
	Offset uint64
	Type   string
	Body   struct{ Kind, Ride, Driver, Passenger string }
	Source string
}

func readEgress(t *testing.T, s *server, from uint64, wait string) ([]egressRecord, uint64) {
	t.Helper()
	a := call(t, "GET", fmt.Sprintf("%s/egress/ride-events?from=%d&max=1000&wait=%s", s.ingress, from, wait), "", nil)
	if a.status != 200 {
		t.Fatalf("egress: %d %s", a.status, a.body)
	}
	var out struct {
		Records []egressRecord
		Next    uint64
	}
	if err := json.Unmarshal(a.body, &out); err != nil {
		t.Fatalf("egress: %v %s", err, a.body)
	}
	return out.Records, out.Next
}

// TestEndToEnd builds the server, drives it over HTTP (send, batch,
// request-reply, egress, state, metrics, errors), kills it with SIGKILL,
// restarts it on the same data directory and checks that everything
// acknowledged is still there, then stops it with SIGTERM (exit 0).
func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	// A long checkpoint interval makes recovery replay the log.
	s := startServer(t, bin, data, "--checkpoint-interval", "1h")

	lastCell := e2eLocations(t, s)

	// A batch of locations (newline-delimited JSON).
	var batch bytes.Buffer
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&batch, `{"to":"rides/driver/b-%d","type":"rides/location","body":{"cell":"9-%d"}}`+"\n", i, i)
	}
	if a := call(t, "POST", s.ingress+"/batch", "application/x-ndjson", batch.Bytes()); a.status != 202 || !strings.Contains(string(a.body), `"count":10`) {
		t.Fatalf("batch: %d %s", a.status, a.body)
	}

	outcome := e2eRide(t, s, lastCell["d-0"])
	e2eStateAndMetrics(t, s, outcome)
	e2eBadInput(t, s)

	// Crash.
	if err := s.stop(syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL: the process exited cleanly?")
	}

	// Restart: everything acknowledged is there.
	s = startServer(t, bin, data)
	e2eAfterRestart(t, s, lastCell, outcome)

	// Graceful stop: exit 0 after closing the engine.
	if err := s.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	logs := strings.Join(s.logLines(), "\n")
	for _, want := range []string{`"msg":"starting"`, `"msg":"ready"`, `"msg":"shutting down"`, `"msg":"shutdown complete"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// rideOutcome is the answer of a ride request.
type rideOutcome struct {
	Ride, Driver string
	Failed       bool
}

// e2eLocations sends driver locations, 202'd once durable, and returns the
// last acknowledged cell of each driver, which must survive the kill.
func e2eLocations(t *testing.T, s *server) map[string]string {
	const drivers = 40
	lastCell := make(map[string]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < drivers; i += 4 {
				id := fmt.Sprintf("d-%d", i)
				for round := 0; round < 2; round++ {
					cell := fmt.Sprintf("%d-%d", (i+round)%5, i%3)
					a := call(t, "POST", s.ingress+"/rides/driver/"+id, "application/vnd.rides/location", []byte(`{"cell":"`+cell+`"}`))
					var ack struct{ ID string }
					if a.status != 202 || json.Unmarshal(a.body, &ack) != nil || ack.ID == "" {
						t.Errorf("location %s: %d %s", id, a.status, a.body)
						return
					}
					mu.Lock()
					lastCell[id] = cell
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return lastCell
}

// e2eRide asks for a ride in cell (request-reply) and checks its
// ride-started record on the egress, readable once durable.
func e2eRide(t *testing.T, s *server, cell string) rideOutcome {
	a := call(t, "POST", s.ingress+"/rides/passenger/p-1?wait=5s", "application/vnd.rides/request", []byte(`{"cell":"`+cell+`"}`))
	var outcome rideOutcome
	if a.status != 200 || a.ct != "application/vnd.rides/outcome" || json.Unmarshal(a.body, &outcome) != nil || outcome.Failed || outcome.Driver == "" {
		t.Fatalf("ride request: %d %q %s", a.status, a.ct, a.body)
	}

	// Egress: the ride-started record is readable once durable.
	recs, _ := readEgress(t, s, 0, "5s")
	if len(recs) != 1 || recs[0].Body.Kind != "ride-started" || recs[0].Body.Ride != outcome.Ride ||
		recs[0].Body.Driver != outcome.Driver || recs[0].Body.Passenger != "p-1" || recs[0].Source != "rides/ride/"+outcome.Ride {
		t.Fatalf("egress after the ride: %+v", recs)
	}
	return outcome
}

// e2eStateAndMetrics checks the driver's state, the metrics and /health.
func e2eStateAndMetrics(t *testing.T, s *server, outcome rideOutcome) {
	if st := readState(t, s, "rides/driver/"+outcome.Driver); st["status"].Text != "on_ride" || st["ride"].Text != outcome.Ride {
		t.Errorf("driver state: %+v", st)
	}
	m := call(t, "GET", s.admin+"/metrics", "", nil)
	for _, want := range []string{`shardfn_ingress_requests_total{code="202",route="send"} 80`, `shardfn_ingress_requests_total{code="200",route="request"} 1`,
		"shardfn_invocation_duration_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if a := call(t, "GET", s.admin+"/health", "", nil); a.status != 200 {
		t.Errorf("health: %d", a.status)
	}
}

// e2eBadInput: bad input gets clear JSON errors, and a body over
// --max-body (64KiB) is refused from its Content-Length, before it is read.
func e2eBadInput(t *testing.T, s *server) {
	for _, c := range []struct {
		path, ct string
		body     []byte
		status   int
	}{
		{"/rides/unicorn/u-1", "application/vnd.rides/location", []byte(`{}`), 404},
		{"/rides/driver/d-1", "application/json", []byte(`{}`), 400},
		{"/rides/driver", "application/vnd.rides/location", []byte(`{}`), 400},
	} {
		a := call(t, "POST", s.ingress+c.path, c.ct, c.body)
		var e struct{ Error string }
		if a.status != c.status || json.Unmarshal(a.body, &e) != nil || e.Error == "" {
			t.Errorf("POST %s: %d %s, want %d with a JSON error", c.path, a.status, a.body, c.status)
		}
	}

	// A body over --max-body (64KiB) is refused from its Content-Length,
	// before it is read: the server takes at most its first byte (a raw
	// connection: the server answers and closes while a client would still
	// be writing).
	if c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://")); err != nil {
		t.Fatal(err)
	} else {
		fmt.Fprintf(c, "POST /rides/driver/d-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.rides/location\r\nContent-Length: %d\r\n\r\n{", 100<<10)
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		var e struct{ Error string }
		if r.StatusCode != 413 || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("oversized body: %d %s", r.StatusCode, b)
		}
		c.Close()
	}
}

// e2eAfterRestart: everything acknowledged before the kill is there, the
// ride-started record is still readable, once, and the ride's durable
// finish timer completes it after the restart.
func e2eAfterRestart(t *testing.T, s *server, lastCell map[string]string, outcome rideOutcome) {
	for id, cell := range lastCell {
		if st := readState(t, s, "rides/driver/"+id); st["cell"].Text != cell {
			t.Errorf("after restart, driver %s is in cell %q, want %q (acknowledged)", id, st["cell"].Text, cell)
		}
	}
	for i := 0; i < 10; i++ {
		if st := readState(t, s, fmt.Sprintf("rides/driver/b-%d", i)); st["cell"].Text != fmt.Sprintf("9-%d", i) {
			t.Errorf("after restart, batch driver b-%d: %+v", i, st)
		}
	}
	if st := readState(t, s, "rides/ride/"+outcome.Ride); st["driver"].Text != outcome.Driver {
		t.Errorf("after restart, ride state: %+v", st)
	}
	// The ride-started record is still readable, once, and the ride's
	// durable finish timer completes it after the restart.
	var all []egressRecord
	next := uint64(0)
	deadline := time.Now().Add(30 * time.Second)
	for !hasKind(all, "ride-completed") && time.Now().Before(deadline) {
		var recs []egressRecord
		recs, next = readEgress(t, s, next, "2s")
		all = append(all, recs...)
	}
	started, completed := 0, 0
	for _, r := range all {
		if r.Body.Ride != outcome.Ride {
			t.Errorf("unexpected record %+v", r)
		}
		switch r.Body.Kind {
		case "ride-started":
			started++
		case "ride-completed":
			completed++
		}
	}
	if started != 1 || completed != 1 {
		t.Errorf("after restart, egress has %d ride-started and %d ride-completed records, want 1 and 1: %+v", started, completed, all)
	}
}

// TestSecondSignal: a request that never finishes holds the graceful drain;
// a second SIGTERM then exits at once with status 130.
func TestSecondSignal(t *testing.T) {
	s := startServer(t, buildBinary(t), filepath.Join(t.TempDir(), "data"))
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half a request: the server waits for the rest (up to its read timeout).
	fmt.Fprint(c, "POST /rides/driver/d-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.rides/location\r\nContent-Length: 100\r\n\r\n{")
	time.Sleep(100 * time.Millisecond) // let the server read the headers
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(strings.Join(s.logLines(), "\n"), `"msg":"shutting down"`); {
		if time.Now().After(deadline) {
			t.Fatal("no shutting down log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = s.stop(syscall.SIGTERM)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("second signal: exit %v, want status 130", err)
	}
}

func hasKind(recs []egressRecord, kind string) bool {
	for _, r := range recs {
		if r.Body.Kind == kind {
			return true
		}
	}
	return false
}

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"4194304", 4 << 20}, {"4MiB", 4 << 20}, {"256MB", 256e6}, {"1.5GiB", 3 << 29}, {"64k", 64 << 10}, {"512 KiB", 512 << 10}} {
		got, err := parseByteSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "4XB", "1e99GiB"} {
		if _, err := parseByteSize(bad); err == nil {
			t.Errorf("parseByteSize(%q) accepted", bad)
		}
	}
	var out bytes.Buffer
	c, err := parseFlags(nil, &out)
	if err != nil || c.dataDir != "./data" || c.ingressAddr != "127.0.0.1:8080" || c.adminAddr != "127.0.0.1:9090" ||
		c.shards != 0 || c.memoryBudget != 256<<20 || c.maxBody != 4<<20 || c.checkpointInterval != 10*time.Second || !c.stateAPI {
		t.Errorf("defaults: %+v %v", c, err)
	}
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	for _, name := range []string{"data-dir", "ingress-addr", "admin-addr", "shards", "memory-budget", "max-batch-delay",
		"checkpoint-interval", "max-body", "module", "state-api", "log-level", "max-conns", "max-conns-per-client",
		"max-body-in-flight", "max-egress-bytes", "max-egress-reads", "max-queued-bytes", "mailbox-capacity", "memory-limit"} {
		if !strings.Contains(out.String(), "-"+name) {
			t.Errorf("-h does not explain --%s", name)
		}
	}
	if c.maxConns != 0 || c.maxConnsPerClient != 0 || c.maxBodyInFlight != 0 || c.maxEgressBytes != 4<<20 {
		t.Errorf("limit defaults: %+v", c)
	}
	for _, args := range [][]string{{"--shards", "-1"}, {"--max-body", "0"}, {"--checkpoint-interval", "0s"}, {"stray"}, {"--memory-budget", "lots"},
		{"--max-conns", "-1"}, {"--max-conns-per-client", "-2"}, {"--max-body", "1MiB", "--max-body-in-flight", "64KiB"}, {"--max-egress-bytes", "0"},
		{"--max-egress-reads", "0"}, {"--max-queued-bytes", "32KiB"}, {"--mailbox-capacity", "0"}, {"--memory-limit", "lots"}, {"--memory-limit", "1MiB"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
