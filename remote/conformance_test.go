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
	f := newTestFunction(t, c, jsEndpoint(base))
	self := engine.Address{Namespace: "conf", Type: "counter", ID: "x"}
	caller := engine.Address{Namespace: "test", Type: "caller", ID: "c1"}
	invs := []engine.RemoteInvocation{
		{Caller: caller, HasCaller: true, Message: engine.String("alice")},
		{Message: engine.String("bob")},
	}

	// 1. No state registered yet: the SDK answers with its specs.
	res := invoke(t, f, &engine.RemoteBatch{Target: self, Invocations: invs})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	seen := engine.ValueSpec{Name: "seen", Type: engine.TypeInt, Mode: engine.ExpireAfterWrite, Expiry: time.Minute}
	last := engine.ValueSpec{Name: "last", Type: engine.TypeString, Mode: engine.ExpireAfterInvoke, Expiry: 30 * time.Second}
	if want := []engine.ValueSpec{seen, last}; !reflect.DeepEqual(res.MissingSpecs, want) {
		t.Fatalf("missing specs\n got %+v\nwant %+v", res.MissingSpecs, want)
	}

	// 1b. Only one of the two specs registered: still incomplete, listing the other.
	res = invoke(t, f, &engine.RemoteBatch{Target: self, States: []engine.StateValue{{Spec: seen}}, Invocations: invs})
	if want := []engine.ValueSpec{last}; res.Err != nil || !reflect.DeepEqual(res.MissingSpecs, want) {
		t.Fatalf("partial specs: got %+v, want missing %+v", res, want)
	}

	// 2. The same batch with every spec registered (no values yet) runs both
	// invocations in order on one storage.
	res = invoke(t, f, &engine.RemoteBatch{Target: self, States: []engine.StateValue{{Spec: seen}, {Spec: last}}, Invocations: invs})
	if res.Err != nil || len(res.MissingSpecs) != 0 {
		t.Fatalf("got %+v", res)
	}
	intVal := func(v int32) engine.Message {
		return engine.Message{Type: engine.TypeInt, Value: engine.AppendIntWrapper(nil, v)}
	}
	mutations := map[string]engine.StateMutation{}
	for _, m := range res.Mutations {
		mutations[m.Name] = m
	}
	if len(res.Mutations) != 2 ||
		!reflect.DeepEqual(mutations["seen"], engine.StateMutation{Name: "seen", Value: intVal(2)}) ||
		!reflect.DeepEqual(mutations["last"], engine.StateMutation{Name: "last", Value: engine.String("bob")}) {
		t.Fatalf("mutations %+v", res.Mutations)
	}
	wantSends := []engine.Outgoing{
		{To: engine.Address{Namespace: "conf", Type: "echo", ID: "alice"}, Message: engine.String("hello alice #1")},
		{To: caller, Message: engine.String("ack 1")},
		{To: engine.Address{Namespace: "conf", Type: "echo", ID: "bob"}, Message: engine.String("hello bob #2")},
	}
	if !reflect.DeepEqual(res.Sends, wantSends) {
		t.Fatalf("sends\n got %+v\nwant %+v", res.Sends, wantSends)
	}
	wantDelayed := []engine.DelayedSend{
		{To: self, Message: engine.String("tick"), Delay: 1500 * time.Millisecond, Token: "tick-x-1"},
		{To: self, Message: engine.String("tick"), Delay: 1500 * time.Millisecond, Token: "tick-x-2"},
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

	// 3. The state written by call 2 goes back; the SDK reads it.
	res = invoke(t, f, &engine.RemoteBatch{Target: self,
		States:      []engine.StateValue{{Spec: seen, Value: intVal(2).Value, Present: true}, {Spec: last, Value: engine.String("bob").Value, Present: true}},
		Invocations: []engine.RemoteInvocation{{Caller: caller, HasCaller: true, Message: engine.String("carol")}}})
	if res.Err != nil || len(res.Sends) != 2 || !reflect.DeepEqual(res.Sends[1], engine.Outgoing{To: caller, Message: engine.String("ack 3")}) ||
		!reflect.DeepEqual(res.Cancels, []string{"tick-x-2"}) {
		t.Fatalf("call 3: %+v", res)
	}

	// 4. Clearing a value is a DELETE mutation; nothing else happens.
	res = invoke(t, f, &engine.RemoteBatch{Target: self,
		States:      []engine.StateValue{{Spec: seen, Value: intVal(3).Value, Present: true}, {Spec: last}},
		Invocations: []engine.RemoteInvocation{{Message: engine.String("reset")}}})
	want := &engine.RemoteResult{Mutations: []engine.StateMutation{{Name: "seen", Delete: true}}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("reset: got %+v, want %+v", res, want)
	}

	// 5. A stateless function of the same endpoint (wildcard pattern).
	res = invoke(t, f, &engine.RemoteBatch{Target: engine.Address{Namespace: "conf", Type: "echo", ID: "e"},
		Invocations: []engine.RemoteInvocation{{Caller: caller, HasCaller: true, Message: engine.String("ping")}}})
	if res.Err != nil || !reflect.DeepEqual(res.Sends, []engine.Outgoing{{To: caller, Message: engine.String("ping")}}) {
		t.Fatalf("echo: %+v", res)
	}

	// 6. An unknown function type makes the SDK answer 500: retried, then
	// dead-lettered with the status in the error.
	res = invoke(t, f, &engine.RemoteBatch{Target: engine.Address{Namespace: "conf", Type: "nobody", ID: "n"},
		Invocations: []engine.RemoteInvocation{{Message: engine.String("x")}}})
	if res.Err == nil {
		t.Fatalf("unknown type: %+v", res)
	}
}

// TestConformanceJSSDKSplit: a batch over the byte budget, split into
// sequential sub-requests, gives the SDK function the same final state as
// one request would.
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
