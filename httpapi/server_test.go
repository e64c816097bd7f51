package httpapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// fakeEngine is an in-memory Engine for the HTTP layer's tests: it counts
// messages per address, echoes requests, and fails as told.
type fakeEngine struct {
	mu      sync.Mutex
	err     error // returned by Send/SendBatch/Request when set
	failed  error // Err()
	notRdy  bool
	nextID  uint64
	counts  map[string]int
	last    map[string]engine.Message
	egress  []engine.EgressRecord
	batches int
}

func newFake() *fakeEngine {
	return &fakeEngine{counts: map[string]int{}, last: map[string]engine.Message{}}
}

func (f *fakeEngine) check(to engine.Address) error {
	if f.err != nil {
		return f.err
	}
	if to.Namespace != "test" {
		return fmt.Errorf("%w: %s", engine.ErrUnknownType, to.FunctionType())
	}
	return nil
}

func (f *fakeEngine) Send(_ context.Context, to engine.Address, msg engine.Message, _ ...engine.SendOption) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(to); err != nil {
		return 0, err
	}
	f.nextID++
	f.counts[to.String()]++
	f.last[to.String()] = engine.Message{Type: msg.Type, Value: bytes.Clone(msg.Value)}
	return f.nextID, nil
}

func (f *fakeEngine) SendBatch(ctx context.Context, msgs []engine.Outgoing) error {
	for _, m := range msgs {
		if _, err := f.Send(ctx, m.To, m.Message); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.batches++
	f.mu.Unlock()
	return nil
}

func (f *fakeEngine) Request(ctx context.Context, to engine.Address, msg engine.Message, _ ...engine.SendOption) (engine.Message, error) {
	if _, err := f.Send(ctx, to, msg); err != nil {
		return engine.Message{}, err
	}
	if to.ID == "silent" {
		<-ctx.Done()
		return engine.Message{}, engine.ErrNoReply
	}
	return engine.Message{Type: "test/echo", Value: msg.Value}, nil
}

func (f *fakeEngine) ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]engine.EgressRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.EgressRecord
	size := 0
	for _, r := range f.egress {
		if r.Offset >= from && len(out) < max {
			n := len(r.Message.Value)
			if maxBytes > 0 && len(out) > 0 && size+n > maxBytes {
				break
			}
			size += n
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeEngine) State(_ context.Context, addr engine.Address) ([]engine.StateValue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if addr.Namespace != "test" {
		return nil, engine.ErrUnknownType
	}
	return []engine.StateValue{
		{Spec: engine.ValueSpec{Name: "n", Type: engine.TypeLong}, Value: engine.AppendLongWrapper(nil, int64(f.counts[addr.String()])), Present: true},
		{Spec: engine.ValueSpec{Name: "s", Type: engine.TypeString}, Value: engine.AppendStringWrapper(nil, "hi \"x\""), Present: true},
		{Spec: engine.ValueSpec{Name: "j", Type: "test/json"}, Value: []byte(`{"a": [1, 2]}`), Present: true},
		{Spec: engine.ValueSpec{Name: "t", Type: engine.TypeBytes}, Value: []byte("12-40"), Present: true},
		{Spec: engine.ValueSpec{Name: "b", Type: engine.TypeBytes}, Value: []byte{0, 1, 2}, Present: true},
		{Spec: engine.ValueSpec{Name: "none", Type: engine.TypeBytes}},
	}, nil
}

func (f *fakeEngine) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.notRdy && f.failed == nil
}
func (f *fakeEngine) Err() error { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }

func (f *fakeEngine) set(fn func(f *fakeEngine)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

// testServer serves s on loopback and returns the ingress and admin base
// URLs; it stops at the test's end.
func testServer(t *testing.T, s *Server) (ingress, admin string) {
	t.Helper()
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = s.ServeIngress(ln1); done <- struct{}{} }()
	go func() { _ = s.ServeAdmin(ln2); done <- struct{}{} }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.ShutdownIngress(ctx)
		_ = s.ShutdownAdmin(ctx)
		<-done
		<-done
	})
	return "http://" + ln1.Addr().String(), "http://" + ln2.Addr().String()
}

type resp struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, ct, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
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
	return resp{r.StatusCode, r.Header, string(b)}
}

// errorBody checks that an error answer is JSON {"error":"..."} and
// returns the message.
func errorBody(t *testing.T, r resp) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
		t.Fatalf("status %d: body %q is not {\"error\":...}", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("error Content-Type %q", ct)
	}
	return e.Error
}

func TestIngressRoutes(t *testing.T) {
	s, err := New(Options{MaxBodyBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	rt := &routeTest{loc: "application/vnd.test/loc"}
	rt.ing, rt.adm = testServer(t, s)
	rt.beforeEngine(t)
	rt.f = newFake()
	if err := s.SetEngine(rt.f); err != nil {
		t.Fatal(err)
	}
	rt.sends(t)
	rt.requestReply(t)
	rt.badInput(t)
	rt.engineErrors(t)
	rt.batches(t)
	rt.egress(t)
	rt.admin(t)
}

// routeTest is the server of TestIngressRoutes, which its steps share.
type routeTest struct {
	ing, adm string // base URLs
	loc      string // a message type's Content-Type
	f        *fakeEngine
}

// Before the engine is set: 503 with Retry-After, /health 200, /ready 503.
func (rt *routeTest) beforeEngine(t *testing.T) {
	r := do(t, "POST", rt.ing+"/test/counter/a", rt.loc, "{}")
	if r.status != 503 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("before SetEngine: %d %v", r.status, r.header)
	}
	errorBody(t, r)
	if r := do(t, "GET", rt.adm+"/health", "", ""); r.status != 200 || !strings.Contains(r.body, "recovering") {
		t.Errorf("health while recovering: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", rt.adm+"/ready", "", ""); r.status != 503 {
		t.Errorf("ready while recovering: %d", r.status)
	}
}

// Sends, with and without a message type; /ready once the engine is set.
func (rt *routeTest) sends(t *testing.T) {
	r := do(t, "POST", rt.ing+"/test/counter/a", rt.loc, `{"x":1}`)
	if r.status != 202 || r.body != "{\"id\":\"1\"}\n" {
		t.Fatalf("send: %d %q", r.status, r.body)
	}
	if r := do(t, "PUT", rt.ing+"/test/counter/a", "", "plain text"); r.status != 202 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	if m := rt.f.last["test/counter/a"]; m.Type != engine.TypeString {
		t.Errorf("no content type gave %q", m.Type)
	} else if s, _ := m.AsString(); s != "plain text" {
		t.Errorf("string body %q", s)
	}
	if r := do(t, "GET", rt.adm+"/ready", "", ""); r.status != 200 {
		t.Errorf("ready: %d", r.status)
	}
}

// Request-reply: the reply, no reply in time, a wait over MaxWait.
func (rt *routeTest) requestReply(t *testing.T) {
	r := do(t, "POST", rt.ing+"/test/counter/b?wait=2s", rt.loc, `{"q":1}`)
	if r.status != 200 || r.body != `{"q":1}` || r.header.Get("Content-Type") != "application/vnd.test/echo" {
		t.Fatalf("request: %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
	r = do(t, "POST", rt.ing+"/test/counter/silent?wait=50ms", rt.loc, `{}`)
	if r.status != 504 {
		t.Fatalf("silent request: %d %s", r.status, r.body)
	}
	errorBody(t, r)
	if r := do(t, "POST", rt.ing+"/test/counter/b?wait=2h", rt.loc, `{}`); r.status != 400 {
		t.Errorf("wait over MaxWait: %d", r.status)
	}
}

// Bad input is answered with its status and an error body.
func (rt *routeTest) badInput(t *testing.T) {
	for _, c := range []struct {
		method, path, ct, body string
		status                 int
	}{
		{"POST", "/other/x/y", rt.loc, "{}", 404},
		{"POST", "/test/counter", rt.loc, "{}", 400},
		{"POST", "/test/counter/a", "application/json", "{}", 400},
		{"POST", "/test/counter/a?x=1", rt.loc, "{}", 400},
		{"POST", "/test/counter/a", rt.loc, strings.Repeat("x", 2000), 413},
		{"GET", "/test/counter/a", "", "", 405},
		{"DELETE", "/batch", "", "", 405},
		{"POST", "/egress/x", "", "", 405},
		{"GET", "/metrics", "", "", 404},
	} {
		r := do(t, c.method, rt.ing+c.path, c.ct, c.body)
		if r.status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.status, r.body, c.status)
			continue
		}
		errorBody(t, r)
	}
}

// Engine errors map to their status and Retry-After.
func (rt *routeTest) engineErrors(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		retry  bool
	}{
		{fmt.Errorf("%w: mailbox full", engine.ErrOverloaded), 503, true},
		{engine.ErrFailed, 503, false},
		{engine.ErrTooLarge, 413, false},
		{engine.ErrBadAddress, 400, false},
		{engine.ErrClosed, 503, true},
		{io.ErrUnexpectedEOF, 500, false},
	} {
		rt.f.set(func(f *fakeEngine) { f.err = c.err })
		r := do(t, "POST", rt.ing+"/test/counter/a", rt.loc, "{}")
		if r.status != c.status || (r.header.Get("Retry-After") == "1") != c.retry {
			t.Errorf("%v: %d Retry-After %q, want %d %v", c.err, r.status, r.header.Get("Retry-After"), c.status, c.retry)
		}
		errorBody(t, r)
	}
	rt.f.set(func(f *fakeEngine) { f.err = nil })
}

// Batches, both forms.
func (rt *routeTest) batches(t *testing.T) {
	nd := `{"to":"test/counter/c","type":"test/loc","body":{"cell":"1-2"}}` + "\n\n" +
		`{"to":"test/counter/c/with/slash","type":"shardfn/bytes","body_b64":"AAEC"}` + "\n" +
		`{"to":"test/counter/d","type":"io.statefun.types/string","body":"hey"}`
	r := do(t, "POST", rt.ing+"/batch", "application/x-ndjson", nd)
	if r.status != 202 || r.body != "{\"count\":3}\n" {
		t.Fatalf("ndjson batch: %d %s", r.status, r.body)
	}
	if m := rt.f.last["test/counter/c/with/slash"]; !bytes.Equal(m.Value, []byte{0, 1, 2}) {
		t.Errorf("b64 body %v", m.Value)
	}
	if s, _ := rt.f.last["test/counter/d"].AsString(); s != "hey" {
		t.Errorf("string batch body %q", s)
	}
	var bin []byte
	for _, fld := range []string{"test/counter/e", "test/loc", `{"cell":"9-9"}`} {
		bin = binary.AppendUvarint(bin, uint64(len(fld)))
		bin = append(bin, fld...)
	}
	r = do(t, "POST", rt.ing+"/batch", contentTypeBatch, string(bin))
	if r.status != 202 || rt.f.counts["test/counter/e"] != 1 {
		t.Fatalf("binary batch: %d %s", r.status, r.body)
	}
	for _, bad := range []struct{ ct, body string }{
		{"", `{"to":"test/counter","type":"test/loc","body":{}}`},
		{"", `{"to":"test/counter/x","type":"test/loc","body":{},"extra":1}`},
		{"", `not json`},
		{contentTypeBatch, string(bin[:len(bin)-1])},
	} {
		r := do(t, "POST", rt.ing+"/batch", bad.ct, bad.body)
		if r.status != 400 {
			t.Errorf("bad batch %q: %d %s", bad.body, r.status, r.body)
		}
		errorBody(t, r)
	}
}

// Egress reads.
func (rt *routeTest) egress(t *testing.T) {
	rt.f.set(func(f *fakeEngine) {
		f.egress = []engine.EgressRecord{
			{Offset: 0, Message: engine.Message{Type: "test/ev", Value: []byte(`{"k": 1}`)}, Source: engine.Address{Namespace: "test", Type: "counter", ID: "a"}},
			{Offset: 1, Message: engine.Message{Type: "shardfn/bytes", Value: []byte{0xff}}, Source: engine.Address{Namespace: "test", Type: "counter", ID: "b"}},
		}
	})
	r := do(t, "GET", rt.ing+"/egress/events?from=0&max=10&wait=10ms", "", "")
	want := `{"records":[{"offset":0,"type":"test/ev","body":{"k":1},"source":"test/counter/a"},{"offset":1,"type":"shardfn/bytes","body_b64":"/w==","source":"test/counter/b"}],"next":2}` + "\n"
	if r.status != 200 || r.body != want {
		t.Errorf("egress: %d\n%s\nwant\n%s", r.status, r.body, want)
	}
	r = do(t, "GET", rt.ing+"/egress/events?from=2", "", "")
	if r.status != 200 || r.body != "{\"records\":[],\"next\":2}\n" {
		t.Errorf("egress at end: %d %s", r.status, r.body)
	}
	for _, q := range []string{"from=-1", "max=0", "wait=forever", "bogus=1"} {
		if r := do(t, "GET", rt.ing+"/egress/events?"+q, "", ""); r.status != 400 {
			t.Errorf("egress ?%s: %d", q, r.status)
		}
	}
}

// Admin: state, metrics, pprof, failed-stop.
func (rt *routeTest) admin(t *testing.T) {
	r := do(t, "GET", rt.adm+"/state/test/counter/a", "", "")
	wantState := `{"address":"test/counter/a","state":{"n":{"type":"io.statefun.types/long","value":` + fmt.Sprint(rt.f.counts["test/counter/a"]) +
		`},"s":{"type":"io.statefun.types/string","value":"hi \"x\""},"j":{"type":"test/json","value":{"a":[1,2]}},` +
		`"t":{"type":"shardfn/bytes","text":"12-40"},"b":{"type":"shardfn/bytes","value_b64":"AAEC"},"none":{"type":"shardfn/bytes","present":false}}}` + "\n"
	if r.status != 200 || r.body != wantState {
		t.Errorf("state: %d\n%s\nwant\n%s", r.status, r.body, wantState)
	}
	if r := do(t, "GET", rt.adm+"/state/other/x/y", "", ""); r.status != 404 {
		t.Errorf("state of unknown type: %d", r.status)
	}
	r = do(t, "GET", rt.adm+"/metrics", "", "")
	for _, want := range []string{`shardfn_ingress_requests_total{code="202",route="send"}`, "shardfn_ingress_request_duration_seconds_bucket", "go_goroutines", "process_"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if r := do(t, "GET", rt.adm+"/debug/pprof/", "", ""); r.status != 200 {
		t.Errorf("pprof: %d", r.status)
	}
	if r := do(t, "GET", rt.adm+"/nope", "", ""); r.status != 404 {
		t.Errorf("admin 404: %d", r.status)
	}
	rt.f.set(func(f *fakeEngine) { f.failed = fmt.Errorf("%w: fsync: EIO", engine.ErrFailed) })
	if r := do(t, "GET", rt.adm+"/health", "", ""); r.status != 503 || !strings.Contains(r.body, "EIO") {
		t.Errorf("health in failed-stop: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", rt.adm+"/ready", "", ""); r.status != 503 {
		t.Errorf("ready in failed-stop: %d", r.status)
	}
}

func TestStateAPIDisabled(t *testing.T) {
	s, err := New(Options{DisableStateAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(newFake()); err != nil {
		t.Fatal(err)
	}
	_, adm := testServer(t, s)
	r := do(t, "GET", adm+"/state/test/counter/a", "", "")
	if r.status != 404 {
		t.Fatalf("disabled state API: %d", r.status)
	}
	errorBody(t, r)
}
