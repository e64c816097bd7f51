package httpapi

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

func TestParseIngress(t *testing.T) {
	type want struct {
		ns, typ, id, msgType string
		wrap                 bool
		wait                 time.Duration
		hasWait              bool
		status               int // 0: no error
	}
	cases := []struct {
		path, ct, query, body string
		want                  want
	}{
		{"/rides/driver/d-17", "application/vnd.rides/location", "", `{"cell":"1-2"}`,
			want{ns: "rides", typ: "driver", id: "d-17", msgType: "rides/location"}},
		{"/rides/passenger/p-9", "application/vnd.rides/request", "wait=5s", `{"cell":"1-2"}`,
			want{ns: "rides", typ: "passenger", id: "p-9", msgType: "rides/request", wait: 5 * time.Second, hasWait: true}},
		{"/rides/passenger/p-9", "Application/VND.rides/request; charset=utf-8", "wait=1m30s&", "{}",
			want{ns: "rides", typ: "passenger", id: "p-9", msgType: "rides/request", wait: 90 * time.Second, hasWait: true}},
		{"/example/greeter/Bob", "", "", "hello",
			want{ns: "example", typ: "greeter", id: "Bob", msgType: engine.TypeString, wrap: true}},
		{"/example/greeter/Bob", "application/vnd.io.statefun.types/string", "wait=250ms", "hello",
			want{ns: "example", typ: "greeter", id: "Bob", msgType: engine.TypeString, wrap: true, wait: 250 * time.Millisecond, hasWait: true}},
		{"/a/b/x%2Fy%20z", "application/vnd.a/m", "", "",
			want{ns: "a", typ: "b", id: "x/y z", msgType: "a/m"}},
		{"/a/b/c", "application/vnd.a/m", "wait=1.5s", "",
			want{ns: "a", typ: "b", id: "c", msgType: "a/m", wait: 1500 * time.Millisecond, hasWait: true}},
		// Errors.
		{"/a/b", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a/b/c/d", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a//c", "application/vnd.a/m", "", "", want{status: 400}},
		{"a/b/c", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a/b/%zz", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a/b/%4", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a%2Fx/b/c", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a/b/c%00", "application/vnd.a/m", "", "", want{status: 400}},
		{"/a/b/c", "application/json", "", "", want{status: 400}},
		{"/a/b/c", "application/vnd.nons", "", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/", "", "", want{status: 400}},
		{"/a/b/c", "application/vnd./m", "", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wait=5", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wait=-5s", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wait=0", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wait=5s&wait=6s", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wiat=5s", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "wait=99999999999999999h", "", want{status: 400}},
		{"/a/b/c", "application/vnd.a/m", "", "0123456789abcdefX", want{status: 413}},
	}
	var r IngressRequest
	for _, c := range cases {
		err := ParseIngress(&r, []byte(c.path), []byte(c.ct), []byte(c.query), []byte(c.body), 16)
		if c.want.status != 0 {
			var he *Error
			if !errors.As(err, &he) || he.Status != c.want.status {
				t.Errorf("%s %q %q: got err %v, want status %d", c.path, c.ct, c.query, err, c.want.status)
			} else if he.Msg == "" {
				t.Errorf("%s: empty error message", c.path)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %q %q: %v", c.path, c.ct, c.query, err)
			continue
		}
		got := want{ns: string(r.Namespace), typ: string(r.Type), id: string(r.ID), msgType: string(r.MessageType),
			wrap: r.WrapString, wait: r.Wait, hasWait: r.HasWait}
		if got != c.want {
			t.Errorf("%s %q %q: got %+v, want %+v", c.path, c.ct, c.query, got, c.want)
		}
		if string(r.Body) != c.body {
			t.Errorf("%s: body %q", c.path, r.Body)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, s := range []string{"1ns", "2us", "3µs", "4ms", "5s", "6m", "7h", "1h2m3s", "1.5s", "0.25ms", "10s500ms"} {
		want, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseDuration([]byte(s))
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "s", "5", "5x", "-1s", ".s", "1..5s", "5s5"} {
		if d, err := parseDuration([]byte(s)); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", s, d)
		}
	}
}

// TestParseIngressAllocs pins the allocation discipline of the ingress hot
// path: parsing allocates nothing in steady state, and building the engine
// message allocates exactly two copies, the id and the body that the engine
// keeps (the names are interned).
func TestParseIngressAllocs(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := []byte("/rides/driver/d-17%2Dx")
	ct := []byte("application/vnd.rides/location")
	query := []byte("wait=5s")
	body := []byte(`{"cell":"12-40"}`)
	var r IngressRequest
	parse := func() {
		if err := ParseIngress(&r, path, ct, query, body, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	parse() // warm the scratch buffer
	if n := testing.AllocsPerRun(1000, parse); n != 0 {
		t.Errorf("ParseIngress allocates %v times per request, want 0", n)
	}
	var to engine.Address
	var msg engine.Message
	build := func() { to, msg = s.message(&r) }
	build() // intern the names
	if n := testing.AllocsPerRun(1000, build); n != 2 {
		t.Errorf("message allocates %v times per request, want 2", n)
	}
	if to.String() != "rides/driver/d-17-x" || msg.Type != "rides/location" || string(msg.Value) != string(body) {
		t.Errorf("built %v %q %q", to, msg.Type, msg.Value)
	}
	// The string type is wrapped.
	if err := ParseIngress(&r, path, nil, nil, []byte("hi"), 0); err != nil {
		t.Fatal(err)
	}
	_, msg = s.message(&r)
	if got, err := msg.AsString(); err != nil || got != "hi" {
		t.Errorf("string message decodes to %q, %v", got, err)
	}
	if n := testing.AllocsPerRun(1000, build); n != 2 {
		t.Errorf("message allocates %v times per string request, want 2", n)
	}
}

func FuzzParseIngress(f *testing.F) {
	f.Add([]byte("/rides/driver/d-17"), []byte("application/vnd.rides/location"), []byte(""), []byte(`{"cell":"1-2"}`))
	f.Add([]byte("/rides/passenger/p-9"), []byte("application/vnd.rides/request"), []byte("wait=5s"), []byte(`{"cell":"3-4"}`))
	f.Add([]byte("/a/b/%2F%zz"), []byte(""), []byte("wait=1.5h&"), []byte("text"))
	f.Fuzz(func(t *testing.T, path, ct, query, body []byte) {
		var r IngressRequest
		err := ParseIngress(&r, path, ct, query, body, 1<<16)
		if err != nil {
			var he *Error
			if !errors.As(err, &he) || (he.Status != http.StatusBadRequest && he.Status != http.StatusRequestEntityTooLarge) || he.Msg == "" {
				t.Fatalf("error %v is not a 400/413 *Error", err)
			}
			return
		}
		if len(r.Namespace) == 0 || len(r.Type) == 0 || len(r.ID) == 0 || len(r.MessageType) == 0 {
			t.Fatalf("accepted an empty part: %+v", r)
		}
		if r.HasWait && r.Wait <= 0 {
			t.Fatalf("accepted wait %v", r.Wait)
		}
		for _, p := range [][]byte{r.Namespace, r.Type, r.ID} {
			if !printableUTF8(p) {
				t.Fatalf("accepted non-printable %q", p)
			}
		}
		// Parsing again into the same request gives the same result.
		ns, typ, id := string(r.Namespace), string(r.Type), string(r.ID)
		if err := ParseIngress(&r, path, ct, query, body, 1<<16); err != nil || string(r.Namespace) != ns || string(r.Type) != typ || string(r.ID) != id {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}

func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(""), []byte(`{"to":"rides/driver/d-1","type":"rides/location","body":{"cell":"1-2"}}`+"\n"))
	f.Add([]byte(contentTypeBatch), []byte("\x10rides/driver/d-1\x0erides/location\x02{}"))
	f.Fuzz(func(t *testing.T, ct, body []byte) {
		msgs, err := ParseBatch(ct, body, 100)
		if err != nil {
			var he *Error
			if !errors.As(err, &he) || he.Msg == "" {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		for _, m := range msgs {
			if m.To.Namespace == "" || m.To.Type == "" || m.To.ID == "" || m.Message.Type == "" {
				t.Fatalf("accepted %+v", m)
			}
		}
	})
}
