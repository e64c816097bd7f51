package remote

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// e2eServer is one cmd/engine process of TestEndToEndJSSDK.
type e2eServer struct {
	t              *testing.T
	cmd            *exec.Cmd
	ingress, admin string
	exited         chan struct{}

	mu   sync.Mutex
	logs []string
}

// buildEngine builds ./cmd/engine into dir.
func buildEngine(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "engine")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/engine")
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/engine: %v\n%s", err, out)
	}
	return bin
}

// startEngine starts bin on free loopback ports (port 0; the addresses are
// read from the "listening" log line) and waits until /ready answers 200.
func startEngine(t *testing.T, bin, dataDir, module string) *e2eServer {
	t.Helper()
	s := &e2eServer{t: t, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--data-dir", dataDir, "--module", module,
		"--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json", "--shards", "2", "--checkpoint-interval", "1s")
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
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			s.mu.Lock()
			t.Logf("engine log:\n%s", strings.Join(s.logs, "\n"))
			s.mu.Unlock()
		}
	})
	select {
	case a := <-addrs:
		s.ingress, s.admin = "http://"+a[0], "http://"+a[1]
	case <-s.exited:
		t.Fatalf("engine exited at start:\n%s", strings.Join(s.logs, "\n"))
	case <-time.After(60 * time.Second): // hang guard only
		t.Fatal("engine did not log its addresses")
	}
	waitFor(t, "engine ready", func() (bool, string) {
		st, _, body := doHTTP(t, "GET", s.admin+"/ready", "", nil)
		return st == 200, fmt.Sprintf("%d %s", st, body)
	})
	return s
}

// kill SIGKILLs the engine and waits for the process to end.
func (s *e2eServer) kill() {
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	<-s.exited
}

var e2eHTTP = &http.Client{Timeout: 60 * time.Second}

func doHTTP(t *testing.T, method, url, ct string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		return 0, "", []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// waitFor polls cond until it holds; the bound is a hang guard only.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("%s: %v", what, time.Since(start)) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after 30 s; last: %s", what, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// e2eReply is the e2e/reply JSON of e2e/session (remote/js/conformance.js).
type e2eReply struct {
	ID    string  `json:"id"`
	Note  *string `json:"note"`
	Count int     `json:"count"`
	Fired string  `json:"fired"`
}

// send posts an e2e/cmd message to e2e/session/<id> and wants 202.
func (s *e2eServer) send(id string, cmd map[string]any) {
	s.t.Helper()
	b, _ := json.Marshal(cmd)
	if st, _, body := doHTTP(s.t, "POST", s.ingress+"/e2e/session/"+id, "application/vnd.e2e/cmd", b); st != 202 {
		s.t.Fatalf("send %s to e2e/session/%s: %d %s", b, id, st, body)
	}
}

// ask posts an e2e/cmd message with ?wait= and returns the reply's
// Content-Type and body.
func (s *e2eServer) ask(id string, cmd map[string]any) (string, []byte) {
	s.t.Helper()
	b, _ := json.Marshal(cmd)
	st, ct, body := doHTTP(s.t, "POST", s.ingress+"/e2e/session/"+id+"?wait=20s", "application/vnd.e2e/cmd", b)
	if st != 200 {
		s.t.Fatalf("request %s to e2e/session/%s: %d %s", b, id, st, body)
	}
	return ct, body
}

// askReply is ask for ops that e2e/session itself answers.
func (s *e2eServer) askReply(id string, cmd map[string]any) e2eReply {
	s.t.Helper()
	ct, body := s.ask(id, cmd)
	var r e2eReply
	if ct != "application/vnd.e2e/reply" || json.Unmarshal(body, &r) != nil || r.ID != id {
		s.t.Fatalf("reply to %v: %s %s", cmd, ct, body)
	}
	return r
}

// e2eValue is one value of the admin state answer.
type e2eValue struct {
	Type    string          `json:"type"`
	Value   json.RawMessage `json:"value"`
	Text    *string         `json:"text"`
	B64     string          `json:"value_b64"`
	Present *bool           `json:"present"`
}

// set reports whether the value is present: listed, and not marked
// "present":false.
func (v e2eValue) set() bool { return v.Type != "" && (v.Present == nil || *v.Present) }

// state reads GET /state/<addr> from the admin listener.
func (s *e2eServer) state(addr string) map[string]e2eValue {
	s.t.Helper()
	st, _, body := doHTTP(s.t, "GET", s.admin+"/state/"+addr, "", nil)
	var out struct {
		Address string
		State   map[string]e2eValue
	}
	if st != 200 || json.Unmarshal(body, &out) != nil || out.Address != addr {
		s.t.Fatalf("state of %s: %d %s", addr, st, body)
	}
	return out.State
}

// str returns a state value as a string: a JSON string value or text.
func (v e2eValue) str() string {
	if !v.set() {
		return ""
	}
	if v.Text != nil {
		return *v.Text
	}
	var s string
	if json.Unmarshal(v.Value, &s) == nil {
		return s
	}
	return string(v.Value)
}

// e2eRecord is one egress record as the ingress returns it.
type e2eRecord struct {
	Offset uint64          `json:"offset"`
	Type   string          `json:"type"`
	Body   json.RawMessage `json:"body"`
	Source string          `json:"source"`
}

// egress reads every record of the named egress log from offset 0.
func (s *e2eServer) egress(name string) []e2eRecord {
	s.t.Helper()
	var all []e2eRecord
	from := uint64(0)
	for {
		st, _, body := doHTTP(s.t, "GET", fmt.Sprintf("%s/egress/%s?from=%d&max=1000", s.ingress, name, from), "", nil)
		var out struct {
			Records []e2eRecord
			Next    uint64
		}
		if st != 200 || json.Unmarshal(body, &out) != nil {
			s.t.Fatalf("egress %s: %d %s", name, st, body)
		}
		if len(out.Records) == 0 {
			return all
		}
		all = append(all, out.Records...)
		from = out.Next
	}
}

// metric returns the sum of the Prometheus samples of name whose label set
// contains every one of labels (e.g. `endpoint="e2e/*"`); 0 when none.
func (s *e2eServer) metric(name string, labels ...string) float64 {
	s.t.Helper()
	st, _, body := doHTTP(s.t, "GET", s.admin+"/metrics", "", nil)
	if st != 200 {
		s.t.Fatalf("metrics: %d %s", st, body)
	}
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			s.t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// outRecord is a record of the e2e-out egress.
type outRecord struct {
	Op, ID, Text, Name string
	Count              int
}

func decodeOut(t *testing.T, recs []e2eRecord) []outRecord {
	t.Helper()
	out := make([]outRecord, len(recs))
	for i, r := range recs {
		if r.Type != "e2e/out" || json.Unmarshal(r.Body, &out[i]) != nil || r.Source != "e2e/session/"+out[i].ID {
			t.Fatalf("e2e-out record %d: %+v (%s)", i, r, r.Body)
		}
	}
	return out
}

// TestEndToEndJSSDK runs the shardfn server (cmd/engine, built here) with
// remote functions served by the official StateFun JavaScript SDK
// (remote/js/conformance.js, e2e/session) named in a module.yaml, drives it
// over the HTTP ingress only and checks every effect through the ingress
// and the admin listener: state with expiry, request-reply, a delayed
// message and the cancellation of another, egress records, sends from the
// JS function to the embedded Go RS-1 functions and the reply of the Go
// ride to the request that started the chain at the JS function. It then
// SIGKILLs the server, restarts it on the same data directory and checks
// that state, egress and a pending timer survived, and that the remote
// function's state specs were remembered (no incomplete-context round trip
// after the restart).
func TestEndToEndJSSDK(t *testing.T) {
	base := startNode(t, "conformance.js") // skips without node/npm
	dir := t.TempDir()
	bin := buildEngine(t, dir)
	module := filepath.Join(dir, "module.yaml")
	yaml := "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: e2e/*\n  urlPathTemplate: " + base + "/statefun\n" +
		"  transport:\n    timeouts:\n      call: 30s\n"
	if err := os.WriteFile(module, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	s := startEngine(t, bin, dataDir, module)

	// Timers first, so their wait overlaps the rest: "early" is due before
	// "late" but cancelled, so when "late" has fired "early" must not have.
	s.send("t1", map[string]any{"op": "arm", "name": "late", "delay": 4000, "token": "tok-late"})
	s.send("t1", map[string]any{"op": "arm", "name": "early", "delay": 2500, "token": "tok-early"})
	s.send("t1", map[string]any{"op": "cancel", "token": "tok-early"})

	e2eRequestReplyAndState(t, s)
	events := e2eChainToGo(t, s)
	want := e2eTimersFired(t, s)

	// A timer pending at the crash, then SIGKILL.
	s.send("t2", map[string]any{"op": "arm", "name": "after-crash", "delay": 1500, "token": "tok-x"})
	s.kill()

	s = startEngine(t, bin, dataDir, module)
	e2eAfterRestart(t, s, events, want)
}

// e2eRequestReplyAndState: the JS function answers its caller
// (shardfn/reply/<token>) and the engine turns that into the HTTP reply;
// its state is seen by the admin API, and expires.
func e2eRequestReplyAndState(t *testing.T, s *e2eServer) {
	r := s.askReply("s1", map[string]any{"op": "note", "text": "hello"})
	wrote := time.Now()
	if r.Note == nil || *r.Note != "hello" || r.Count != 1 {
		t.Fatalf("note reply %+v", r)
	}
	st := s.state("e2e/session/s1")
	if time.Since(wrote) < 2*time.Second { // the note expires 3 s after its write
		if v := st["note"]; v.str() != "hello" || v.Type != "io.statefun.types/string" {
			t.Fatalf("state note %+v", st)
		}
	}
	if v := st["count"]; string(v.Value) != "1" || v.Type != "io.statefun.types/int" {
		t.Fatalf("state count %+v", st)
	}
	// Expiry: the admin view drops the note, and so does the function's.
	waitFor(t, "note expired in the admin state", func() (bool, string) {
		st := s.state("e2e/session/s1")
		return !st["note"].set(), fmt.Sprintf("%+v", st)
	})
	if r := s.askReply("s1", map[string]any{"op": "peek"}); r.Note != nil || r.Count != 1 {
		t.Fatalf("after expiry the function sees %+v, want no note and count 1", r)
	}
}

// e2eChainToGo: JS -> embedded Go (a location for the built-in
// rides/driver), then JS -> Go passenger -> Go ride, whose reply answers the
// request that started the chain at the JS function. It returns the
// ride-events.
func e2eChainToGo(t *testing.T, s *e2eServer) []e2eRecord {
	s.askReply("s1", map[string]any{"op": "locate", "driver": "d-1", "cell": "2-2"})
	waitFor(t, "driver d-1 joined 2-2", func() (bool, string) {
		st := s.state("rides/driver/d-1")
		return st["cell"].str() == "2-2" && st["joined"].str() == "2-2" && st["status"].str() == "free", fmt.Sprintf("%+v", st)
	})
	// JS -> Go passenger -> Go ride, whose reply answers the request that
	// started the chain at the JS function.
	ct, body := s.ask("s1", map[string]any{"op": "request", "passenger": "p-1", "cell": "2-2"})
	if ct != "application/vnd.rides/outcome" || string(body) != `{"ride":"p-1-1","driver":"d-1"}` {
		t.Fatalf("ride outcome: %s %s", ct, body)
	}
	waitFor(t, "ride p-1-1 completed", func() (bool, string) {
		st := s.state("rides/passenger/p-1")
		return string(st["rides"].Value) == "1" && !st["ride"].set(), fmt.Sprintf("%+v", st)
	})
	events := s.egress("ride-events")
	if len(events) != 2 || !strings.Contains(string(events[0].Body), `"ride-started"`) ||
		!strings.Contains(string(events[1].Body), `"ride-completed"`) || events[1].Source != "rides/ride/p-1-1" {
		t.Fatalf("ride-events %+v", events)
	}
	return events
}

// e2eTimersFired: the delayed message fired; the cancelled one did not. It
// returns the e2e-out records so far.
func e2eTimersFired(t *testing.T, s *e2eServer) []outRecord {
	waitFor(t, "timer late fired", func() (bool, string) {
		st := s.state("e2e/session/t1")
		return st["fired"].set(), fmt.Sprintf("%+v", st)
	})
	if got := s.state("e2e/session/t1")["fired"].str(); got != "late" {
		t.Fatalf("fired timers %q, want only late (early was cancelled)", got)
	}
	outBefore := s.egress("e2e-out")
	want := []outRecord{{Op: "note", ID: "s1", Text: "hello", Count: 1}, {Op: "fire", ID: "t1", Name: "late"}}
	if got := decodeOut(t, outBefore); !reflect.DeepEqual(got, want) {
		t.Fatalf("e2e-out\n got %+v\nwant %+v", got, want)
	}
	if n := s.metric("shardfn_remote_batches_total", `endpoint="e2e/*"`, `result="incomplete"`); n < 1 {
		t.Fatalf("%v incomplete-context answers before the restart; the first call of a type must have been one", n)
	}
	return want
}

// e2eAfterRestart: after SIGKILL and a restart, state, fired timers,
// egress and the remembered state specs are as before, and the timer
// pending at the crash fires.
func e2eAfterRestart(t *testing.T, s *e2eServer, events []e2eRecord, want []outRecord) {
	st := s.state("e2e/session/s1")
	if string(st["count"].Value) != "1" || st["note"].set() {
		t.Fatalf("s1 after restart %+v", st)
	}
	if got := s.state("e2e/session/t1")["fired"].str(); got != "late" {
		t.Fatalf("t1 fired after restart %q", got)
	}
	if st := s.state("rides/passenger/p-1"); string(st["rides"].Value) != "1" {
		t.Fatalf("p-1 after restart %+v", st)
	}
	if ev := s.egress("ride-events"); !reflect.DeepEqual(ev, events) {
		t.Fatalf("ride-events after restart\n got %+v\nwant %+v", ev, events)
	}
	if r := s.askReply("s1", map[string]any{"op": "note", "text": "again"}); r.Count != 2 || r.Note == nil || *r.Note != "again" {
		t.Fatalf("note after restart %+v", r)
	}
	waitFor(t, "timer after-crash fired after the restart", func() (bool, string) {
		st := s.state("e2e/session/t2")
		return st["fired"].str() == "after-crash", fmt.Sprintf("%+v", st)
	})
	out := decodeOut(t, s.egress("e2e-out"))
	if len(out) != 4 || !reflect.DeepEqual(out[:2], want) {
		t.Fatalf("e2e-out after restart %+v, want %+v then the new note and fire", out, want)
	}
	rest := map[outRecord]bool{out[2]: true, out[3]: true}
	if !rest[outRecord{Op: "note", ID: "s1", Text: "again", Count: 2}] || !rest[outRecord{Op: "fire", ID: "t2", Name: "after-crash"}] {
		t.Fatalf("e2e-out after restart %+v", out)
	}
	// The specs the SDK asked for before the crash were remembered: every
	// call after the restart went through at once.
	if n := s.metric("shardfn_remote_batches_total", `endpoint="e2e/*"`, `result="incomplete"`); n != 0 {
		t.Fatalf("%v incomplete-context round trips after the restart; the state specs were not remembered", n)
	}
	if n := s.metric("shardfn_remote_batches_total", `endpoint="e2e/*"`, `result="ok"`); n < 2 {
		t.Fatalf("%v ok batches after the restart, want at least 2", n)
	}
}
