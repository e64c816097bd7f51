package httpapi

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/shardfn/shardfn/engine"
)

// keepEngine keeps every address and message it is sent exactly as given
// (no copy), as the engine does for hours in addresses, callers and timers.
type keepEngine struct {
	*fakeEngine
	mu   sync.Mutex
	kept []engine.Outgoing
}

func (k *keepEngine) Send(_ context.Context, to engine.Address, msg engine.Message, _ ...engine.SendOption) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kept = append(k.kept, engine.Outgoing{To: to, Message: msg})
	return uint64(len(k.kept)), nil
}

func (k *keepEngine) SendBatch(ctx context.Context, msgs []engine.Outgoing) error {
	for _, m := range msgs {
		if _, err := k.Send(ctx, m.To, m.Message); err != nil {
			return err
		}
	}
	return nil
}

// held renders what the engine holds, for comparison.
func (k *keepEngine) held() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, m := range k.kept {
		out = append(out, m.To.String()+" "+m.Message.Type+" "+string(m.Message.Value))
	}
	return out
}

// scribble overwrites b in place.
func scribble(b []byte) {
	for i := range b {
		b[i] = 'Z'
	}
}

// TestEngineHoldsNoRequestMemory sends messages through the handler (one
// message with an escaped id, a text message, a JSON batch and a binary
// batch), then overwrites every byte of each request's path and body and
// reuses the same request context and pooled buffers for another request:
// what the engine holds must not change.
func TestEngineHoldsNoRequestMemory(t *testing.T) {
	s, err := New(Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	k := &keepEngine{fakeEngine: newFake()}
	if err := s.SetEngine(k); err != nil {
		t.Fatal(err)
	}
	h := s.IngressHandler()
	var ctx fasthttp.RequestCtx
	send := func(uri, contentType, body string) {
		t.Helper()
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(uri)
		ctx.Request.Header.SetContentType(contentType)
		ctx.Request.SetBodyString(body)
		h(&ctx)
		if ctx.Response.StatusCode() != 202 {
			t.Fatalf("POST %s: %d %s", uri, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		scribble(ctx.URI().PathOriginal())
		scribble(ctx.Request.Body())
	}
	send("/rides/driver/d-17%2Dx", "application/vnd.rides/location", `{"cell":"12-40"}`)
	send("/rides/driver/d-18", "text/plain", "hello")
	send("/batch", "application/json", `{"to":"rides/driver/d-19","type":"rides/location","body":{"cell":"1-2"}}`+"\n")
	send("/batch", contentTypeBatch, "\x11rides/driver/d-20\x0erides/location\x02{}")
	want := []string{
		`rides/driver/d-17-x rides/location {"cell":"12-40"}`,
		"rides/driver/d-18 " + engine.TypeString + " " + string(engine.AppendStringWrapper(nil, "hello")),
		`rides/driver/d-19 rides/location {"cell":"1-2"}`,
		`rides/driver/d-20 rides/location {}`,
	}
	check := func(when string) {
		t.Helper()
		got := k.held()
		for i, w := range want {
			if got[i] != w {
				t.Errorf("%s: the engine holds %q, want %q", when, got[i], w)
			}
		}
	}
	check("after overwriting the requests")
	// Same lengths, other bytes: a request reusing the buffers in place.
	send("/ZZZZZ/ZZZZZZ/ZZZZZZZZZZZZZ", "application/vnd.ZZZZZ/ZZZZZZZZ", `{"ZZZZ":"ZZZZZ"}`)
	send("/batch", contentTypeBatch, "\x11ZZZZZ/ZZZZZZ/ZZZZ\x0eZZZZZ/ZZZZZZZZ\x02[]")
	check("after reusing the request buffers")
}

// TestMessageIDDoesNotPinBody keeps only the ids of messages with large
// bodies, as an engine does when it keeps an address long after the message
// is gone: the bodies must be collectable. (An id sharing an allocation with
// its body would keep each body alive for as long as the address lives.)
func TestMessageIDDoesNotPinBody(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 32, 1 << 20
	body := []byte(`"` + strings.Repeat("x", size-2) + `"`)
	var r IngressRequest
	ids := make([]string, n)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range ids {
		if err := ParseIngress(&r, []byte("/rides/driver/d-"+strconv.Itoa(i)), []byte("application/vnd.rides/blob"), nil, body, 0); err != nil {
			t.Fatal(err)
		}
		to, msg := s.message(&r)
		if len(msg.Value) != size {
			t.Fatalf("body of %d bytes, want %d", len(msg.Value), size)
		}
		ids[i] = to.ID
	}
	after := heap()
	if after > before && after-before > n*size/4 {
		t.Errorf("keeping %d ids keeps %d bytes alive; their %d bodies of %d bytes are pinned", n, after-before, n, size)
	}
	runtime.KeepAlive(ids)
}
