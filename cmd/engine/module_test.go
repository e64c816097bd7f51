package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
	pb "github.com/shardfn/shardfn/remote/proto/reqreply"
)

// greeter is a remote function speaking StateFun's request-reply protocol:
// for every invocation with a string argument it writes "Hello, <name>" to
// the egress shardfn/greetings.
func greeter(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
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
