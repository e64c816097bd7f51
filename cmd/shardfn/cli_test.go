package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi/adminapi"
	"github.com/shardfn/shardfn/internal/testserver"
	"github.com/shardfn/shardfn/rides"
)

var (
	visits = engine.ValueSpec{Name: "visits", Type: engine.TypeLong}
	nick   = engine.ValueSpec{Name: "nick", Type: engine.TypeString}
)

// greeter counts visits and replies; "fail" bodies fail the invocation.
func greeter() engine.FunctionSpec {
	return engine.FunctionSpec{Namespace: "example", Type: "greeter", States: []engine.ValueSpec{visits, nick},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			name, err := msg.AsString()
			if err != nil {
				return err
			}
			if name == "fail" {
				return errors.New("refused to greet")
			}
			n, _, err := ctx.GetInt64(visits)
			if err != nil {
				return err
			}
			if err := ctx.SetInt64(visits, n+1); err != nil {
				return err
			}
			ctx.Reply(engine.String(fmt.Sprintf("hello %s, visit %d", name, n+1)))
			ctx.Egress("greetings", engine.String(name))
			return nil
		})}
}

func start(t *testing.T) *testserver.Server {
	return testserver.Start(t, engine.Options{}, append(rides.Specs(), greeter())...)
}

// cliRun runs the client against s and returns its exit status, stdout and
// stderr.
func cliRun(t *testing.T, s *testserver.Server, stdin string, args ...string) (int, string, string) {
	t.Helper()
	return cliRunCtx(context.Background(), t, s, stdin, args...)
}

func cliRunCtx(ctx context.Context, t *testing.T, s *testserver.Server, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if s != nil {
		flags := []string{"--ingress", s.Ingress, "--admin", s.Admin}
		i := len(args)
		for j, a := range args {
			if a == "--" {
				i = j
				break
			}
		}
		args = append(append(append([]string(nil), args[:i]...), flags...), args[i:]...)
	}
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, s *testserver.Server, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := cliRun(t, s, stdin, args...)
	if code != 0 {
		t.Fatalf("shardfn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func wantFail(t *testing.T, s *testserver.Server, code int, errPart string, args ...string) {
	t.Helper()
	c, out, errs := cliRun(t, s, "", args...)
	if c != code || !strings.Contains(errs, errPart) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("shardfn %s: exit %d, stderr %q (stdout %q); want exit %d and one line containing %q", strings.Join(args, " "), c, errs, out, code, errPart)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands {
		args := append(strings.Fields(c.path), "--help")
		code, out, _ := cliRun(t, nil, "", args...)
		if code != 0 || !strings.Contains(out, "Usage: shardfn "+c.path) || !strings.Contains(out, "Examples:\n  shardfn "+strings.Fields(c.path)[0]) {
			t.Errorf("%s --help: exit %d\n%s", c.path, code, out)
		}
	}
	if code, out, _ := cliRun(t, nil, "", "help"); code != 0 || !strings.Contains(out, "dead-letters replay RANGE") {
		t.Errorf("help: %d %s", code, out)
	}
	if code, out, _ := cliRun(t, nil, "", "state", "--help"); code != 0 || !strings.Contains(out, "shardfn state set") {
		t.Errorf("state --help: %d %s", code, out)
	}
	wantFail(t, nil, 2, `unknown command "frobnicate"`, "frobnicate")
	wantFail(t, nil, 2, `"state" needs a subcommand`, "state")
	wantFail(t, nil, 2, "want ADDRESS [NAME]", "state", "get")
	wantFail(t, nil, 2, "want namespace/type/id", "state", "get", "nope")
	wantFail(t, nil, 2, "flag provided but not defined", "status", "--bogus")
	wantFail(t, nil, 2, "listener address", "status", "--admin", "ftp://x")
}

func TestSendAndRequest(t *testing.T) {
	s := start(t)
	out := mustRun(t, s, "", "send", "example/greeter/bob", engine.TypeString, "Bob")
	if !strings.HasPrefix(out, "accepted example/greeter/bob (id ") {
		t.Fatalf("send: %q", out)
	}
	out = mustRun(t, s, "", "request", "example/greeter/bob", engine.TypeString, "Bob")
	if out != "hello Bob, visit 2\n" {
		t.Fatalf("request: %q", out)
	}
	out = mustRun(t, s, "Robert", "request", "--json", "example/greeter/bob", engine.TypeString, "@-")
	if strings.TrimSpace(out) != `{"body":"hello Robert, visit 3","type":"io.statefun.types/string"}` {
		t.Fatalf("request --json from stdin: %q", out)
	}
	out = mustRun(t, s, "", "send", "--json", "rides/driver/d-1", "rides/location", `{"cell":"1-1"}`)
	if !strings.HasPrefix(out, `{"id":"`) {
		t.Fatalf("send --json: %q", out)
	}
	wantFail(t, s, 1, "not registered", "send", "nope/fn/1", "x/y", "z")
	wantFail(t, s, 2, "message type", "send", "example/greeter/bob", "notype", "z")
	wantFail(t, s, 1, "no reply", "request", "--wait", "50ms", "rides/driver/d-1", "rides/location", `{"cell":"1-2"}`)
	wantFail(t, nil, 1, "cannot reach the ingress listener at http://127.0.0.1:1", "send", "--ingress", "127.0.0.1:1", "a/b/c", "x/y", "z")
}

func TestSendBatch(t *testing.T) {
	s := start(t)
	in := "# drivers\n" +
		"rides/driver/d-1 rides/location {\"cell\":\"1-1\"}\n\n" +
		`{"to":"rides/driver/d-2","type":"rides/location","body":{"cell":"2-2"}}` + "\n" +
		"example/greeter/ann io.statefun.types/string Ann Lee\n"
	out := mustRun(t, s, in, "send", "--batch", "-", "--batch-size", "2")
	if out != "accepted 3 messages in 2 batches\n" {
		t.Fatalf("batch: %q", out)
	}
	ctx := context.Background()
	for id, want := range map[string]string{"d-1": "1-1", "d-2": "2-2"} {
		vals, err := s.Engine.State(ctx, engine.Address{Namespace: "rides", Type: "driver", ID: id})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, v := range vals {
			found = found || (v.Spec.Name == "cell" && string(v.Value) == want)
		}
		if !found {
			t.Fatalf("driver %s state %+v, want cell %s", id, vals, want)
		}
	}
	if got := mustRun(t, s, "", "state", "get", "example/greeter/ann", "visits"); got != "1\n" {
		t.Fatalf("ann visits = %q", got)
	}
	c, _, errs := cliRun(t, s, "a/b\n", "send", "--batch", "-")
	if c != 1 || !strings.Contains(errs, "line 1:") {
		t.Fatalf("bad line: %d %q", c, errs)
	}
}

func TestStateGetSetDelete(t *testing.T) {
	s := start(t)
	mustRun(t, s, "", "request", "example/greeter/bob", engine.TypeString, "Bob")
	out := mustRun(t, s, "", "state", "get", "example/greeter/bob")
	if !strings.Contains(out, "NAME") || !regexp.MustCompile(`visits\s+io\.statefun\.types/long\s+1`).MatchString(out) {
		t.Fatalf("state get:\n%s", out)
	}
	out = mustRun(t, s, "", "state", "set", "example/greeter/bob", "visits", "41")
	if !regexp.MustCompile(`visits\s+io\.statefun\.types/long\s+41`).MatchString(out) {
		t.Fatalf("state set:\n%s", out)
	}
	mustRun(t, s, "", "state", "set", "example/greeter/bob", "nick", "Bobby Tables")
	if got := mustRun(t, s, "", "state", "get", "example/greeter/bob", "nick"); got != "Bobby Tables\n" {
		t.Fatalf("nick = %q", got)
	}
	// The function sees the repaired value: the repair went through the log.
	if got := mustRun(t, s, "", "request", "example/greeter/bob", engine.TypeString, "Bob"); got != "hello Bob, visit 42\n" {
		t.Fatalf("after repair: %q", got)
	}
	out = mustRun(t, s, "", "state", "get", "--json", "example/greeter/bob")
	var st stateAnswer
	if err := json.Unmarshal([]byte(out), &st); err != nil || string(st.State["visits"]["value"]) != "42" {
		t.Fatalf("state get --json: %q (%v)", out, err)
	}
	mustRun(t, s, "", "state", "set", "rides/driver/d-9", "cell", "MTItNDA=", "--as", "b64")
	if got := mustRun(t, s, "", "state", "get", "rides/driver/d-9", "cell"); got != "12-40\n" {
		t.Fatalf("b64 set: %q", got)
	}
	out = mustRun(t, s, "", "state", "delete", "example/greeter/bob", "nick")
	if !regexp.MustCompile(`nick\s+io\.statefun\.types/string\s+\(unset\)`).MatchString(out) {
		t.Fatalf("after delete:\n%s", out)
	}
	wantFail(t, s, 1, `state "colour" is not declared by example/greeter`, "state", "set", "example/greeter/bob", "colour", "red")
	wantFail(t, s, 1, "is not a 64-bit integer", "state", "set", "example/greeter/bob", "visits", "many")
	wantFail(t, s, 1, `has no value "nick"`, "state", "get", "example/greeter/bob", "nick")
	wantFail(t, s, 2, "not valid JSON", "state", "set", "example/greeter/bob", "visits", "{", "--as", "json")
	// Negative numbers after "--" are arguments, not flags.
	mustRun(t, s, "", "state", "set", "example/greeter/bob", "--", "visits", "-3")
	if got := mustRun(t, s, "", "state", "get", "example/greeter/bob", "visits"); got != "-3\n" {
		t.Fatalf("negative value: %q", got)
	}
}

func TestEgressTail(t *testing.T) {
	s := start(t)
	for _, n := range []string{"Ann", "Bob", "Cy"} {
		mustRun(t, s, "", "send", "example/greeter/"+n, engine.TypeString, n)
	}
	out := mustRun(t, s, "", "egress", "tail", "greetings")
	want := "0\texample/greeter/Ann\tio.statefun.types/string\tAnn\n1\texample/greeter/Bob\tio.statefun.types/string\tBob\n2\texample/greeter/Cy\tio.statefun.types/string\tCy\n"
	if out != want {
		t.Fatalf("tail:\n%q\nwant\n%q", out, want)
	}
	if out = mustRun(t, s, "", "egress", "tail", "greetings", "--from", "2", "--json"); strings.TrimSpace(out) != `{"body":"Cy","offset":2,"source":"example/greeter/Cy","type":"io.statefun.types/string"}` {
		t.Fatalf("tail --from 2 --json: %q", out)
	}
	if out = mustRun(t, s, "", "egress", "tail", "greetings", "--max", "1"); strings.Count(out, "\n") != 1 {
		t.Fatalf("tail --max 1: %q", out)
	}
	// --follow waits for new records until interrupted: the record sent
	// after it started is printed, then the interrupt ends it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow := &lineWriter{lines: make(chan struct{}, 16)}
	done := make(chan int)
	go func() {
		var errb bytes.Buffer
		done <- run(ctx, []string{"egress", "tail", "greetings", "--from", "3", "--follow", "--ingress", s.Ingress, "--admin", s.Admin}, strings.NewReader(""), follow, &errb)
	}()
	mustRun(t, s, "", "send", "example/greeter/Dee", engine.TypeString, "Dee")
	select {
	case <-follow.lines:
	case <-time.After(30 * time.Second): // hang guard
		t.Fatalf("follow printed nothing in 30 s: %q", follow.String())
	}
	cancel()
	<-done
	if got := follow.String(); got != "3\texample/greeter/Dee\tio.statefun.types/string\tDee\n" {
		t.Fatalf("follow: %q", got)
	}
	wantFail(t, s, 2, "without '/'", "egress", "tail", "a/b")
}

func TestDeadLetters(t *testing.T) {
	s := start(t)
	for _, id := range []string{"x", "y", "z"} {
		mustRun(t, s, "", "send", "example/greeter/"+id, engine.TypeString, "fail")
	}
	out := mustRun(t, s, "", "dead-letters", "list")
	if !strings.Contains(out, "OFFSET") || !strings.Contains(out, "1       example/greeter/y  io.statefun.types/string  refused to greet  fail") {
		t.Fatalf("list:\n%s", out)
	}
	out = mustRun(t, s, "", "dead-letters", "list", "--from", "2", "--json")
	var ans recordsAnswer
	if err := json.Unmarshal([]byte(out), &ans); err != nil || len(ans.Records) != 1 || ans.Next != 3 || str(ans.Records[0], "target") != "example/greeter/z" {
		t.Fatalf("list --json: %q", out)
	}
	out = mustRun(t, s, "", "dead-letters", "replay", "1..2")
	if out != "replayed 2: offsets 1, 2\n" {
		t.Fatalf("replay: %q", out)
	}
	// They fail again: two new dead letters, for y and z.
	out = mustRun(t, s, "", "dead-letters", "list", "--from", "3")
	if !strings.Contains(out, "example/greeter/y") || !strings.Contains(out, "example/greeter/z") || strings.Contains(out, "example/greeter/x") {
		t.Fatalf("after replay:\n%s", out)
	}
	if out = mustRun(t, s, "", "dead-letters", "replay", "100"); out != "replayed nothing\n" {
		t.Fatalf("replay past the end: %q", out)
	}
	wantFail(t, s, 2, "want N, N..M", "dead-letters", "replay", "3-5")
	wantFail(t, s, 2, "want N, N..M", "dead-letters", "replay", "5..3")
	if out = mustRun(t, s, "", "dead-letters", "list", "--from", "99"); out != "no dead letters from offset 99\n" {
		t.Fatalf("empty list: %q", out)
	}
}

func TestStatus(t *testing.T) {
	s := start(t)
	mustRun(t, s, "", "request", "example/greeter/bob", engine.TypeString, "Bob")
	// The server's sampler takes a sample a second and shows rates from
	// the second on; on a loaded machine its ticks may come late.
	out := ""
	for deadline := time.Now().Add(15 * time.Second); ; {
		time.Sleep(500 * time.Millisecond)
		out = mustRun(t, s, "", "status")
		if strings.Contains(out, "ingress msg/s") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"engine      ready", "shards      2", "throughput  ", "ingress msg/s", "totals      1 ingress messages, 1 processed",
		"log         durable at", "applier lag", "checkpoint  ", "ago (every 1s)", "recovery    ", "SHARD  MAILBOX", "\n0      0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "stuck endpoints") {
		t.Fatalf("status shows stuck endpoints the server does not report:\n%s", out)
	}
	out = mustRun(t, s, "", "status", "--json")
	var m struct {
		Health map[string]any  `json:"health"`
		Status adminapi.Status `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Health["status"] != "ok" || !m.Status.Ready || m.Status.Shards != 2 || m.Status.Rates == nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	wantFail(t, nil, 1, "cannot reach the admin listener at http://127.0.0.1:1", "status", "--admin", "127.0.0.1:1")
}

func TestStuckText(t *testing.T) {
	for raw, want := range map[string]string{
		`[]`: "none", `["http://a/fn"]`: "http://a/fn", `[{"endpoint":"http://a","retries":3},{"url":"http://b"}]`: "http://a, http://b", `{"x":1}`: `{"x":1}`,
	} {
		if got := stuckText(json.RawMessage(raw)); got != want {
			t.Errorf("stuckText(%s) = %q, want %q", raw, got, want)
		}
	}
}

// lineWriter collects output and signals each write that ends a line.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if bytes.HasSuffix(p, []byte("\n")) {
		select {
		case w.lines <- struct{}{}:
		default:
		}
	}
	return n, err
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
