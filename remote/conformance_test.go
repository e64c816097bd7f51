package remote

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

var npmOnce sync.Once
var npmErr error

// ensureJSSDK installs remote/js's pinned dependencies (the official
// StateFun JavaScript SDK) with npm ci when node_modules is missing. It
// skips the test when node or npm are not installed.
func ensureJSSDK(t testing.TB) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping the JavaScript SDK test: %s is not installed (%v)", tool, err)
		}
	}
	dir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "apache-flink-statefun", "package.json")); err == nil {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	return dir
}

// startNode runs node <script> from remote/js on a free loopback port and
// returns its base URL; the process is killed at cleanup.
func startNode(t testing.TB, script string) string {
	t.Helper()
	dir := ensureJSSDK(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", script, "0")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() {
		}
	}()
	select {
	case l, ok := <-line:
		var hello struct{ Port int }
		if !ok || json.Unmarshal([]byte(l), &hello) != nil || hello.Port == 0 {
			t.Fatalf("node %s: bad first line %q", script, l)
		}
		return fmt.Sprintf("http://127.0.0.1:%d", hello.Port)
	case <-time.After(30 * time.Second): // hang guard only
		t.Fatalf("node %s did not start", script)
		return ""
	}
}

func jsEndpoint(base string) Endpoint {
	ep := testEndpoint(base)
	ep.Namespace, ep.Type = "conf", "*"
	ep.URLTemplate = base + "/statefun"
	return ep
}

// TestConformanceJSSDK drives the official JavaScript SDK's request-reply
// handler with real batches and checks every decoded effect.
func TestConformanceJSSDK(t *testing.T) {
	base := startNode(t, "conformance.js")
	c := newTestClient(t)
	x := &conformance{
		f:      newTestFunction(t, c, jsEndpoint(base)),
		self:   engine.Address{Namespace: "conf", Type: "counter", ID: "x"},
		caller: engine.Address{Namespace: "test", Type: "caller", ID: "c1"},
		seen:   engine.ValueSpec{Name: "seen", Type: engine.TypeInt, Mode: engine.ExpireAfterWrite, Expiry: time.Minute},
		last:   engine.ValueSpec{Name: "last", Type: engine.TypeString, Mode: engine.ExpireAfterInvoke, Expiry: 30 * time.Second},
	}
	x.invs = []engine.RemoteInvocation{
		{Caller: x.caller, HasCaller: true, Message: engine.String("alice")},
		{Message: engine.String("bob")},
	}
	x.specsAsked(t)
	x.oneSpecMissing(t)
	x.firstRun(t)
	x.stateReadBack(t)
	x.clearIsDelete(t)
	x.wildcard(t)
	x.unknownType(t)
}

// conformance is the function of TestConformanceJSSDK (conformance.js's
// conf/* endpoint) and what its steps share.
type conformance struct {
	f            *Function
	self, caller engine.Address
	seen, last   engine.ValueSpec
	invs         []engine.RemoteInvocation // alice (with a caller), then bob
}

// specsAsked: no state registered yet: the SDK answers with its specs.
func (x *conformance) specsAsked(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: x.self, Invocations: x.invs})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if want := []engine.ValueSpec{x.seen, x.last}; !reflect.DeepEqual(res.MissingSpecs, want) {
		t.Fatalf("missing specs\n got %+v\nwant %+v", res.MissingSpecs, want)
	}
}

// oneSpecMissing: with only one of the two specs registered the answer is
// still incomplete, listing the other.
func (x *conformance) oneSpecMissing(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: x.self, States: []engine.StateValue{{Spec: x.seen}}, Invocations: x.invs})
	if want := []engine.ValueSpec{x.last}; res.Err != nil || !reflect.DeepEqual(res.MissingSpecs, want) {
		t.Fatalf("partial specs: got %+v, want missing %+v", res, want)
	}
}

// firstRun: the same batch with every spec registered (no values yet) runs both
// invocations in order on one storage.
func (x *conformance) firstRun(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: x.self, States: []engine.StateValue{{Spec: x.seen}, {Spec: x.last}}, Invocations: x.invs})
	if res.Err != nil || len(res.MissingSpecs) != 0 {
		t.Fatalf("got %+v", res)
	}
	mutations := map[string]engine.StateMutation{}
	for _, m := range res.Mutations {
		mutations[m.Name] = m
	}
	if len(res.Mutations) != 2 ||
		!reflect.DeepEqual(mutations["seen"], engine.StateMutation{Name: "seen", Value: intMsg(2)}) ||
		!reflect.DeepEqual(mutations["last"], engine.StateMutation{Name: "last", Value: engine.String("bob")}) {
		t.Fatalf("mutations %+v", res.Mutations)
	}
	wantSends := []engine.Outgoing{
		{To: engine.Address{Namespace: "conf", Type: "echo", ID: "alice"}, Message: engine.String("hello alice #1")},
		{To: x.caller, Message: engine.String("ack 1")},
		{To: engine.Address{Namespace: "conf", Type: "echo", ID: "bob"}, Message: engine.String("hello bob #2")},
	}
	if !reflect.DeepEqual(res.Sends, wantSends) {
		t.Fatalf("sends\n got %+v\nwant %+v", res.Sends, wantSends)
	}
	wantDelayed := []engine.DelayedSend{
		{To: x.self, Message: engine.String("tick"), Delay: 1500 * time.Millisecond, Token: "tick-x-1"},
		{To: x.self, Message: engine.String("tick"), Delay: 1500 * time.Millisecond, Token: "tick-x-2"},
	}
	if !reflect.DeepEqual(res.Delayed, wantDelayed) {
		t.Fatalf("delayed\n got %+v\nwant %+v", res.Delayed, wantDelayed)
	}
	if want := []string{"tick-x-1"}; !reflect.DeepEqual(res.Cancels, want) {
		t.Fatalf("cancels %v, want %v", res.Cancels, want)
	}
	if len(res.Egress) != 2 {
		t.Fatalf("egress %+v", res.Egress)
	}
	for i, name := range []string{"alice", "bob"} {
		e := res.Egress[i]
		var rec struct {
			ID, Name string
			Seen     int
		}
		if e.Name != "conf/out" || e.Message.Type != "conf/record" || json.Unmarshal(e.Message.Value, &rec) != nil ||
			rec.ID != "x" || rec.Name != name || rec.Seen != i+1 {
			t.Fatalf("egress %d: %+v (%s)", i, e, e.Message.Value)
		}
	}
}

// stateReadBack: the state written by firstRun goes back; the SDK reads it.
func (x *conformance) stateReadBack(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: x.self,
		States:      []engine.StateValue{{Spec: x.seen, Value: intMsg(2).Value, Present: true}, {Spec: x.last, Value: engine.String("bob").Value, Present: true}},
		Invocations: []engine.RemoteInvocation{{Caller: x.caller, HasCaller: true, Message: engine.String("carol")}}})
	if res.Err != nil || len(res.Sends) != 2 || !reflect.DeepEqual(res.Sends[1], engine.Outgoing{To: x.caller, Message: engine.String("ack 3")}) ||
		!reflect.DeepEqual(res.Cancels, []string{"tick-x-2"}) {
		t.Fatalf("call 3: %+v", res)
	}
}

// clearIsDelete: clearing a value is a DELETE mutation; nothing else happens.
func (x *conformance) clearIsDelete(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: x.self,
		States:      []engine.StateValue{{Spec: x.seen, Value: intMsg(3).Value, Present: true}, {Spec: x.last}},
		Invocations: []engine.RemoteInvocation{{Message: engine.String("reset")}}})
	want := &engine.RemoteResult{Mutations: []engine.StateMutation{{Name: "seen", Delete: true}}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("reset: got %+v, want %+v", res, want)
	}
}

// wildcard: a stateless function of the same endpoint (wildcard pattern).
func (x *conformance) wildcard(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: engine.Address{Namespace: "conf", Type: "echo", ID: "e"},
		Invocations: []engine.RemoteInvocation{{Caller: x.caller, HasCaller: true, Message: engine.String("ping")}}})
	if res.Err != nil || !reflect.DeepEqual(res.Sends, []engine.Outgoing{{To: x.caller, Message: engine.String("ping")}}) {
		t.Fatalf("echo: %+v", res)
	}
}

// unknownType: an unknown function type makes the SDK answer 500: retried, then
// dead-lettered with the status in the error.
func (x *conformance) unknownType(t *testing.T) {
	res := invoke(t, x.f, &engine.RemoteBatch{Target: engine.Address{Namespace: "conf", Type: "nobody", ID: "n"},
		Invocations: []engine.RemoteInvocation{{Message: engine.String("x")}}})
	if res.Err == nil {
		t.Fatalf("unknown type: %+v", res)
	}
}

// TestConformanceJSSDKSplit: a batch over the byte budget, split into
// sequential sub-requests, gives the SDK function the same final state as
// one request would.
// intMsg is an io.statefun.types/int message.
func intMsg(v int32) engine.Message {
	return engine.Message{Type: engine.TypeInt, Value: engine.AppendIntWrapper(nil, v)}
}

func TestConformanceJSSDKSplit(t *testing.T) {
	base := startNode(t, "conformance.js")
	c := newTestClient(t)
	ep := jsEndpoint(base)
	ep.MaxRequestBytes = 1024
	f := newTestFunction(t, c, ep)
	seen := engine.ValueSpec{Name: "seen", Type: engine.TypeInt, Mode: engine.ExpireAfterWrite, Expiry: time.Minute}
	last := engine.ValueSpec{Name: "last", Type: engine.TypeString, Mode: engine.ExpireAfterInvoke, Expiry: 30 * time.Second}
	b := &engine.RemoteBatch{Target: engine.Address{Namespace: "conf", Type: "counter", ID: "s"},
		States: []engine.StateValue{{Spec: seen}, {Spec: last}}}
	for i := 0; i < 20; i++ {
		b.Invocations = append(b.Invocations, engine.RemoteInvocation{Message: engine.String(fmt.Sprintf("n%02d-%0100d", i, i))})
	}
	res := invoke(t, f, b)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if v := counterValue(t, c.metrics.splits, "conf/*"); v < 3 {
		t.Fatalf("%v sub-requests, want several", v)
	}
	for _, m := range res.Mutations {
		if m.Name == "seen" {
			if v, _ := engine.DecodeIntWrapper(m.Value.Value); v != 20 {
				t.Fatalf("seen = %d, want 20", v)
			}
		}
	}
	if len(res.Sends) != 20 || len(res.Delayed) != 20 || len(res.Cancels) != 19 || len(res.Egress) != 20 {
		t.Fatalf("sends %d delayed %d cancels %d egress %d", len(res.Sends), len(res.Delayed), len(res.Cancels), len(res.Egress))
	}
}
