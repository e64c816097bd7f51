package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// greeter is a remote function speaking StateFun's request-reply protocol:
// for every invocation with a string argument it writes "Hello, <name>" to
// the egress shardfn/greetings.
func greeter(t *testing.T) *httptest.Server {
	return httptest.NewServer(greeterHandler(t))
}

func greeterHandler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req pb.ToFunction
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		res := &pb.FromFunction_InvocationResponse{}
		for _, inv := range req.GetInvocation().GetInvocations() {
			name, err := engine.DecodeStringWrapper(inv.GetArgument().GetValue())
			if err != nil || inv.GetArgument().GetTypename() != engine.TypeString {
				t.Errorf("greeter got %v %v", inv.GetArgument(), err)
			}
			res.OutgoingEgresses = append(res.OutgoingEgresses, &pb.FromFunction_EgressMessage{
				EgressNamespace: "shardfn", EgressType: "greetings",
				Argument: &pb.TypedValue{Typename: engine.TypeString, HasValue: true, Value: engine.AppendStringWrapper(nil, "Hello, "+name)},
			})
		}
		out, _ := proto.Marshal(&pb.FromFunction{Response: &pb.FromFunction_InvocationResult{InvocationResult: res}})
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(out)
	})
}

// TestModule serves a remote function named by --module next to the
// built-in ones and drives it the StateFun playground way: a curl-style
// text body without Content-Type becomes a string message.
func TestModule(t *testing.T) {
	fn := greeter(t)
	defer fn.Close()
	dir := t.TempDir()
	module := filepath.Join(dir, "module.yaml")
	yaml := "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: " + fn.URL + "/{function.name}\n"
	if err := os.WriteFile(module, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, buildBinary(t), filepath.Join(dir, "data"), "--module", module)
	if a := call(t, "POST", s.ingress+"/example/greeter/Bob", "", []byte("Bob")); a.status != 202 {
		t.Fatalf("send to remote function: %d %s", a.status, a.body)
	}
	a := call(t, "GET", s.ingress+"/egress/greetings?from=0&wait=5s", "", nil)
	var out struct {
		Records []struct {
			Type, Source string
			Body         json.RawMessage
		}
	}
	if a.status != 200 || json.Unmarshal(a.body, &out) != nil || len(out.Records) != 1 ||
		string(out.Records[0].Body) != `"Hello, Bob"` || out.Records[0].Source != "example/greeter/Bob" {
		t.Fatalf("greetings egress: %d %s", a.status, a.body)
	}
	// The README's curl -d 'Alice' sends application/x-www-form-urlencoded:
	// a string message too (it used to be a 400).
	if a := call(t, "POST", s.ingress+"/example/greeter/alice", "application/x-www-form-urlencoded", []byte("Alice")); a.status != 202 {
		t.Fatalf("curl -d: %d %s", a.status, a.body)
	}
	a = call(t, "GET", s.ingress+"/egress/greetings?from=1&wait=5s", "", nil)
	if a.status != 200 || json.Unmarshal(a.body, &out) != nil || len(out.Records) != 1 || string(out.Records[0].Body) != `"Hello, Alice"` {
		t.Fatalf("greetings egress after curl -d: %d %s", a.status, a.body)
	}
	// The built-in functions are still there.
	if a := call(t, "POST", s.ingress+"/rides/driver/d-1", "application/vnd.rides/location", []byte(`{"cell":"1-1"}`)); a.status != 202 {
		t.Fatalf("rides next to the module: %d %s", a.status, a.body)
	}
}

// TestBadModule: a module file that does not parse stops the start with
// status 1 and says why.
func TestBadModule(t *testing.T) {
	dir := t.TempDir()
	module := filepath.Join(dir, "module.yaml")
	if err := os.WriteFile(module, []byte("kind: io.statefun.endpoints.v2/http\nspec:\n  functoins: x/*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytesBuffer
	code := run([]string{"--data-dir", filepath.Join(dir, "data"), "--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--module", module}, &stderr)
	if code != 1 || !containsAll(stderr.String(), "cannot load the module", "functoins") {
		t.Fatalf("bad module: exit %d\n%s", code, stderr.String())
	}
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *bytesBuffer) String() string              { return string(w.b) }

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// TestModuleEndpointDown is bug 8 of issue 9 against the real server: the
// remote function's service is down for four seconds (longer than the 3.5 s
// after which messages used to be dead-lettered). Requests wait, /health
// says "degraded" and names the endpoint, a log line says it is stuck; once
// the service is up every message is applied exactly once and answered
// 202, nothing is dead-lettered, and /health is "ok" again.
func TestModuleEndpointDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fnAddr := ln.Addr().String()
	ln.Close() // down until started below
	dir := t.TempDir()
	module := filepath.Join(dir, "module.yaml")
	yaml := "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: http://" + fnAddr + "/{function.name}\n" +
		"  shardfn:\n    retryBackoff: 10ms\n    maxRetryBackoff: 200ms\n"
	if err := os.WriteFile(module, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, buildBinary(t), filepath.Join(dir, "data"), "--module", module)
	names := []string{"Ann", "Bob", "Cid"}
	down := time.Now()
	codes := make(chan string, len(names))
	for _, n := range names {
		go func(n string) {
			r, err := http.Post(s.ingress+"/example/greeter/"+n, "", strings.NewReader(n))
			if err != nil {
				codes <- err.Error()
				return
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			codes <- fmt.Sprintf("%d %s", r.StatusCode, b)
		}(n)
	}
	var health answer
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		health = call(t, "GET", s.admin+"/health", "", nil)
		if strings.Contains(string(health.body), "degraded") || time.Now().After(deadline) {
			break
		}
	}
	var h struct {
		Status string
		Stuck  []struct {
			Endpoint, URL       string
			ConsecutiveFailures int `json:"consecutive_failures"`
			RetryingBatches     int `json:"retrying_batches"`
		} `json:"stuck_endpoints"`
	}
	if health.status != 200 || json.Unmarshal(health.body, &h) != nil || h.Status != "degraded" || len(h.Stuck) != 1 ||
		h.Stuck[0].Endpoint != "example/*" || h.Stuck[0].URL != "http://"+fnAddr+"/{function.name}" ||
		h.Stuck[0].ConsecutiveFailures < 1 || h.Stuck[0].RetryingBatches < 1 {
		t.Fatalf("/health while the endpoint is down: %d %s", health.status, health.body)
	}
	time.Sleep(4*time.Second - time.Since(down))
	select {
	case c := <-codes:
		t.Fatalf("a request was answered while its function was down: %s", c)
	default:
	}
	fnLn, err := net.Listen("tcp", fnAddr)
	if err != nil {
		t.Fatalf("start the function service again: %v", err)
	}
	fn := &http.Server{Handler: greeterHandler(t)}
	go func() { _ = fn.Serve(fnLn) }()
	defer fn.Close()
	for range names {
		if c := <-codes; !strings.HasPrefix(c, "202 ") {
			t.Fatalf("answer after recovery: %s", c)
		}
	}
	waitGreetings(t, s.ingress, len(names))
	if a := call(t, "GET", s.ingress+"/egress/dead-letters?from=0", "", nil); a.status != 200 || strings.Contains(string(a.body), "example/greeter") {
		t.Fatalf("dead letters: %d %s", a.status, a.body)
	}
	if a := call(t, "GET", s.admin+"/health", "", nil); a.status != 200 || string(a.body) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("/health after recovery: %d %s", a.status, a.body)
	}
	m := string(call(t, "GET", s.admin+"/metrics", "", nil).body)
	for _, want := range []string{`shardfn_remote_stuck{endpoint="example/*"} 0`, `shardfn_remote_failures_total{endpoint="example/*",reason="connect"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	logs := strings.Join(s.logLines(), "\n")
	if strings.Count(logs, "remote endpoint stuck") != 1 || strings.Count(logs, "remote endpoint recovered") != 1 {
		t.Fatalf("want one stuck and one recovered log line:\n%s", logs)
	}
}

// waitGreetings waits until the egress greetings holds n records. A 202
// means accepted, not answered: the greetings come as the retried batches
// complete, and a long poll returns with the first ones.
func waitGreetings(t *testing.T, ingress string, n int) {
	t.Helper()
	var a answer
	var out struct {
		Records []struct{ Body json.RawMessage }
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a = call(t, "GET", ingress+"/egress/greetings?from=0&max=100&wait=5s", "", nil)
		out.Records = nil
		if a.status != 200 || json.Unmarshal(a.body, &out) != nil || len(out.Records) >= n || time.Now().After(deadline) {
			break
		}
	}
	if a.status != 200 || len(out.Records) != n {
		t.Fatalf("greetings: %d %s", a.status, a.body)
	}
}
