package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi/adminapi"
)

var (
	opsCount = engine.ValueSpec{Name: "count", Type: engine.TypeLong}
	opsName  = engine.ValueSpec{Name: "name", Type: engine.TypeString}
	opsDoc   = engine.ValueSpec{Name: "doc", Type: "test/doc"}
	opsRatio = engine.ValueSpec{Name: "ratio", Type: engine.TypeDouble}
)

// opsEngine opens an in-memory engine with one function type "ops/fn":
// "inc" counts, "fail" fails, "later" sends itself a delayed "inc".
func opsEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Options{Shards: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, engine.FunctionSpec{
		Namespace: "ops", Type: "fn", States: []engine.ValueSpec{opsCount, opsName, opsDoc, opsRatio},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			n, _, _ := ctx.GetInt64(opsCount)
			switch msg.Type {
			case "inc":
				return ctx.SetInt64(opsCount, n+1)
			case "fail":
				return errors.New("refused")
			case "later":
				ctx.SendAfter(time.Hour, ctx.Self(), engine.Message{Type: "inc"}, "tick")
			case "emit":
				ctx.Egress("out", engine.String("hello"))
			}
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func opsServer(t *testing.T, e *engine.Engine, o Options) *httptest.Server {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.AdminHandler())
	t.Cleanup(func() {
		ts.Close()
		_ = s.ShutdownAdmin(context.Background())
	})
	return ts
}

func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminStateWrites(t *testing.T) {
	e := opsEngine(t)
	ts := opsServer(t, e, Options{})
	base := ts.URL + "/state/ops/fn/a"
	steps := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/count", `{"text":"41"}`, 200, `"count":{"type":"io.statefun.types/long","value":41}`},
		{"PUT", "/name", `{"value":"Bob"}`, 200, `"name":{"type":"io.statefun.types/string","value":"Bob"}`},
		{"PUT", "/doc", `{"value":{"a": [1, 2]}}`, 200, `"doc":{"type":"test/doc","value":{"a":[1,2]}}`},
		{"PUT", "/ratio", `{"text":"0.25"}`, 200, `"ratio":{"type":"io.statefun.types/double","value":0.25}`},
		{"PUT", "/doc", `{"text":"plain words"}`, 200, `"doc":{"type":"test/doc","text":"plain words"}`},
		{"PUT", "/doc", `{"value_b64":"AAEC"}`, 200, `"doc":{"type":"test/doc","value_b64":"AAEC"}`},
		{"DELETE", "/doc", ``, 200, `"count":{"type":"io.statefun.types/long","value":41}`},
		{"POST", "", `{"set":{"count":{"value":7}},"delete":["name","ratio"]}`, 200, `{"address":"ops/fn/a","state":{"count":{"type":"io.statefun.types/long","value":7},"name":{"type":"io.statefun.types/string","present":false},"doc":{"type":"test/doc","present":false},"ratio":{"type":"io.statefun.types/double","present":false}}}`},
		// Refused, with what to fix.
		{"PUT", "/count", `{"value":"x"}`, 400, `want a JSON integer`},
		{"PUT", "/count", `{"text":"4.5"}`, 400, `is not a 64-bit integer`},
		{"PUT", "/nope", `{"value":1}`, 400, `state \"nope\" is not declared by ops/fn`},
		{"PUT", "/count", `{"value":1,"text":"1"}`, 400, `exactly one of`},
		{"PUT", "/count", `{"value":1,"type":"io.statefun.types/string"}`, 400, `declared as`},
		{"PUT", "/count", `{"valeu":1}`, 400, `unknown field`},
		{"DELETE", "/nope", ``, 400, `not declared`},
		{"POST", "", `{}`, 400, `nothing to write`},
	}
	for _, s := range steps {
		code, body := call(t, s.method, base+s.path, s.body)
		if code != s.code || !strings.Contains(body, s.want) {
			t.Fatalf("%s %s %s: %d %s, want %d containing %s", s.method, s.path, s.body, code, body, s.code, s.want)
		}
	}
	// The function sees the repaired value.
	if _, err := e.Send(context.Background(), engine.Address{Namespace: "ops", Type: "fn", ID: "a"}, engine.Message{Type: "inc"}); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, "GET", base, ""); code != 200 || !strings.Contains(body, `"value":8`) {
		t.Fatalf("after inc: %d %s", code, body)
	}
	if code, body := call(t, "PUT", ts.URL+"/state/ops/other/a/count", `{"value":1}`); code != 404 || !strings.Contains(body, "not registered") {
		t.Fatalf("unknown type: %d %s", code, body)
	}
	ts2 := opsServer(t, e, Options{DisableStateAPI: true})
	if code, body := call(t, "PUT", ts2.URL+"/state/ops/fn/a/count", `{"value":1}`); code != 404 || !strings.Contains(body, "disabled") {
		t.Fatalf("disabled state API: %d %s", code, body)
	}
}

func TestAdminStatusFunctionsInstances(t *testing.T) {
	e := opsEngine(t)
	ts := opsServer(t, e, Options{})
	ctx := context.Background()
	a := engine.Address{Namespace: "ops", Type: "fn", ID: "i"}
	for _, typ := range []string{"inc", "inc", "later", "fail"} {
		if _, err := e.Send(ctx, a, engine.Message{Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	code, body := call(t, "GET", ts.URL+"/admin/status", "")
	var st adminapi.Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("status: %d %s", code, body)
	}
	if !st.Ready || st.Shards != 2 || len(st.PerShard) != 2 || st.IngressMessages != 4 || st.Invocations != 4 || st.Failures != 1 {
		t.Fatalf("status: %s", body)
	}
	code, body = call(t, "GET", ts.URL+"/admin/functions", "")
	if code != 200 || !strings.Contains(body, `{"name":"ops/fn","kind":"embedded","states":[{"name":"count","type":"io.statefun.types/long","expire":"never"}`) ||
		!strings.Contains(body, `"invocations":4,"failures":1`) {
		t.Fatalf("functions: %d %s", code, body)
	}
	code, body = call(t, "GET", ts.URL+"/admin/instances/ops/fn/i", "")
	if code != 200 || !strings.Contains(body, `"state":{"count":{"type":"io.statefun.types/long","value":2},`) ||
		!strings.Contains(body, `"from":"ops/fn/i","to":"ops/fn/i"`) || !strings.Contains(body, `"token":"tick","type":"inc"`) {
		t.Fatalf("instance: %d %s", code, body)
	}
	if code, body = call(t, "GET", ts.URL+"/admin/instances/ops/fn/i?max=0", ""); code != 400 {
		t.Fatalf("max=0: %d %s", code, body)
	}
}

func TestAdminDeadLettersAndEgress(t *testing.T) {
	e := opsEngine(t)
	ts := opsServer(t, e, Options{})
	ctx := context.Background()
	for _, id := range []string{"x", "y"} {
		if _, err := e.Send(ctx, engine.Address{Namespace: "ops", Type: "fn", ID: id}, engine.Message{Type: "fail", Value: []byte(`{"k":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	code, body := call(t, "GET", ts.URL+"/admin/dead-letters?from=0", "")
	want := `{"records":[{"offset":0,"target":"ops/fn/x","caller":"","error":"refused","type":"fail","body":{"k":1}},` +
		`{"offset":1,"target":"ops/fn/y","caller":"","error":"refused","type":"fail","body":{"k":1}}],"next":2}`
	if code != 200 || strings.TrimSpace(body) != want {
		t.Fatalf("dead letters: %d %s\nwant %s", code, body, want)
	}
	code, body = call(t, "POST", ts.URL+"/admin/dead-letters/replay?from=1&to=2", "")
	if code != 200 || strings.TrimSpace(body) != `{"replayed":[1],"skipped":[]}` {
		t.Fatalf("replay: %d %s", code, body)
	}
	// The replayed message failed again: a third dead letter, for y.
	if code, body = call(t, "GET", ts.URL+"/admin/dead-letters?from=2", ""); code != 200 || !strings.Contains(body, `"offset":2,"target":"ops/fn/y"`) {
		t.Fatalf("after replay: %d %s", code, body)
	}
	if code, body = call(t, "POST", ts.URL+"/admin/dead-letters/replay?from=1", ""); code != 400 {
		t.Fatalf("replay without to: %d %s", code, body)
	}
	if code, body = call(t, "POST", ts.URL+"/admin/dead-letters/replay?from=2&to=1", ""); code != 400 || !strings.Contains(body, "empty") {
		t.Fatalf("empty replay: %d %s", code, body)
	}
	if _, err := e.Send(ctx, engine.Address{Namespace: "ops", Type: "fn", ID: "z"}, engine.Message{Type: "emit"}); err != nil {
		t.Fatal(err)
	}
	code, body = call(t, "GET", ts.URL+"/admin/egress/out?from=0&wait=2s", "")
	if code != 200 || strings.TrimSpace(body) != `{"records":[{"offset":0,"type":"io.statefun.types/string","body":"hello","source":"ops/fn/z"}],"next":1}` {
		t.Fatalf("egress: %d %s", code, body)
	}
}

func TestConsoleIsServed(t *testing.T) {
	e := opsEngine(t)
	ts := opsServer(t, e, Options{})
	code, body := call(t, "GET", ts.URL+"/", "")
	if code != http.StatusFound {
		t.Fatalf("/: %d %s", code, body)
	}
	code, body = call(t, "GET", ts.URL+"/ui/", "")
	if code != 200 || !strings.Contains(body, "<title>shardfn") {
		t.Fatalf("/ui/: %d %.200s", code, body)
	}
	code, _ = call(t, "GET", ts.URL+"/ui/nope.js", "")
	if code != 404 {
		t.Fatalf("/ui/nope.js: %d", code)
	}
}
