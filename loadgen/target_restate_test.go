package loadgen

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRestatePath(t *testing.T) {
	cases := []struct {
		object, key, handler string
		send                 bool
		want                 string
	}{
		{"Driver", "d-17", "location", true, "/Driver/d-17/location/send"},
		{"Passenger", "p-9", "request", false, "/Passenger/p-9/request"},
		{"GeoCell", "3-4", "get", false, "/GeoCell/3-4/get"},
		{"Ride", "a/b c", "get", false, "/Ride/a%2Fb%20c/get"},
	}
	for _, c := range cases {
		if got := restatePath(c.object, c.key, c.handler, c.send); got != c.want {
			t.Errorf("restatePath(%q, %q, %q, %v) = %q, want %q", c.object, c.key, c.handler, c.send, got, c.want)
		}
	}
}

func TestNewRestateTargetRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x:1", "http://", "http://h:1/?q=1", "::"} {
		if _, err := NewRestateTarget(u); err == nil {
			t.Errorf("NewRestateTarget(%q): no error", u)
		}
	}
	tg, err := NewRestateTarget("http://127.0.0.1:28080/")
	if err != nil {
		t.Fatal(err)
	}
	if got := tg.(*RestateTarget).base; got != "http://127.0.0.1:28080" {
		t.Errorf("base = %q", got)
	}
	if tg.Name() != "restate" {
		t.Errorf("Name() = %q", tg.Name())
	}
}

// fakeIngress answers like Restate's ingress for the paths the target uses
// and records every request.
type fakeIngress struct {
	mu   sync.Mutex
	seen []string // "path body"
}

func (f *fakeIngress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, r.Method+" "+r.URL.EscapedPath()+" "+r.Header.Get("Content-Type")+" "+string(body))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if strings.HasSuffix(r.URL.Path, "/get") && (len(body) > 0 || r.Header.Get("Content-Type") != "") {
		// Restate refuses a body for handlers without input.
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"code":400,"message":"input validation error: Expected body and content-type to be empty"}`)
		return
	}
	switch r.URL.EscapedPath() {
	case "/Driver/d-1/location/send":
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"invocationId":"inv_1","status":"Accepted"}`)
	case "/Passenger/p-1/request":
		io.WriteString(w, `{"ride":"p-1.1","driver":"d-1"}`)
	case "/Passenger/p-2/request":
		io.WriteString(w, `{"ride":"p-2.1","failed":true}`)
	case "/Passenger/p-3/request":
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"message":"boom"}`)
	case "/Passenger/p-4/request":
		io.WriteString(w, `not json`)
	case "/Events/ride-events/get":
		io.WriteString(w, `[{"kind":"ride-started","ride":"p-1.1","driver":"d-1","passenger":"p-1"},`+
			`{"kind":"ride-completed","ride":"p-1.1","driver":"d-1","passenger":"p-1"}]`)
	case "/Driver/d-1/get":
		io.WriteString(w, `{"cell":"3-4","joined":"","status":"on_ride","ride":"p-1.1"}`)
	case "/Passenger/p-1/get":
		io.WriteString(w, `{"ride":"","rides":2}`)
	case "/Ride/p-1.1/get":
		io.WriteString(w, `{"passenger":"p-1","driver":"d-1","cell":"3-4","status":"started"}`)
	case "/GeoCell/3-4/get":
		io.WriteString(w, `{"free":["d-2","d-3"]}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"unknown"}`)
	}
}

func TestRestateTargetMapsIngress(t *testing.T) {
	f := &fakeIngress{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	tg, err := NewRestateTarget(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx := context.Background()

	if err := tg.Location(ctx, "d-1", "3-4"); err != nil {
		t.Fatalf("Location: %v", err)
	}
	if got, want := f.seen[0], `POST /Driver/d-1/location/send application/json {"cell":"3-4"}`; got != want {
		t.Errorf("location request = %q, want %q", got, want)
	}
	if o, err := tg.Request(ctx, "p-1", "3-4"); err != nil || o != (Outcome{Ride: "p-1.1", Driver: "d-1"}) {
		t.Errorf("Request p-1 = %+v, %v", o, err)
	}
	if o, err := tg.Request(ctx, "p-2", "3-4"); err != nil || o != (Outcome{Ride: "p-2.1", Failed: true}) {
		t.Errorf("Request p-2 = %+v, %v", o, err)
	}
	if _, err := tg.Request(ctx, "p-3", "3-4"); !errors.Is(err, ErrRestate) || !strings.Contains(err.Error(), "500") {
		t.Errorf("Request p-3 error = %v, want ErrRestate with status 500", err)
	}
	if _, err := tg.Request(ctx, "p-4", "3-4"); !errors.Is(err, ErrRestate) {
		t.Errorf("Request p-4 error = %v, want ErrRestate (bad body)", err)
	}
	if err := tg.Location(ctx, "d-404", "3-4"); !errors.Is(err, ErrRestate) {
		t.Errorf("Location to unknown path error = %v, want ErrRestate", err)
	}

	ev, err := tg.Events(ctx)
	wantEv := []RideEvent{
		{Kind: "ride-started", Ride: "p-1.1", Driver: "d-1", Passenger: "p-1"},
		{Kind: "ride-completed", Ride: "p-1.1", Driver: "d-1", Passenger: "p-1"},
	}
	if err != nil || !reflect.DeepEqual(ev, wantEv) {
		t.Errorf("Events = %+v, %v", ev, err)
	}
	if d, err := tg.Driver(ctx, "d-1"); err != nil || d != (DriverState{Cell: "3-4", Status: "on_ride", Ride: "p-1.1"}) {
		t.Errorf("Driver = %+v, %v", d, err)
	}
	if p, err := tg.Passenger(ctx, "p-1"); err != nil || p != (PassengerState{Rides: 2}) {
		t.Errorf("Passenger = %+v, %v", p, err)
	}
	if r, err := tg.Ride(ctx, "p-1.1"); err != nil || r != (RideState{Passenger: "p-1", Driver: "d-1", Cell: "3-4", Status: "started"}) {
		t.Errorf("Ride = %+v, %v", r, err)
	}
	if c, err := tg.Cell(ctx, "3-4"); err != nil || !reflect.DeepEqual(c.Free, []string{"d-2", "d-3"}) {
		t.Errorf("Cell = %+v, %v", c, err)
	}
}

// TestRestateTargetLive runs a short RS-1 scenario against a real Restate
// server with the peer registered (scripts/bench-peers.sh starts one; see
// loadgen/peers/restate). It is skipped unless SHARDFN_RESTATE_INGRESS names
// the ingress URL, so `make test` never needs Restate.
func TestRestateTargetLive(t *testing.T) {
	ingress := os.Getenv("SHARDFN_RESTATE_INGRESS")
	if ingress == "" {
		t.Skip("SHARDFN_RESTATE_INGRESS not set: no Restate server to test against")
	}
	tg, err := NewRestateTarget(ingress)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Unique ids per run, so the test can run against a used server.
	run := time.Now().Format("150405.000000")
	drv, pas, pas2, cell := "d-live-"+run, "p-live-"+run, "p-live2-"+run, "0-0"

	if err := tg.Location(ctx, drv, cell); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "driver free and joined", func() bool {
		d, err := tg.Driver(ctx, drv)
		return err == nil && d.Status == "free" && d.Joined == cell
	})
	o, err := tg.Request(ctx, pas, cell)
	if err != nil {
		t.Fatal(err)
	}
	if o.Failed || o.Ride == "" || o.Driver == "" {
		t.Fatalf("outcome %+v: want a started ride (a driver is free in %s)", o, cell)
	}
	r, err := tg.Ride(ctx, o.Ride)
	if err != nil || r.Passenger != pas || r.Driver != o.Driver || (r.Status != "started" && r.Status != "completed") {
		t.Fatalf("ride %s = %+v, %v; outcome %+v", o.Ride, r, err, o)
	}
	// A second request of the same passenger while its ride is active is
	// refused.
	if o2, err := tg.Request(ctx, pas, cell); err != nil || !o2.Failed || o2.Ride != "" {
		t.Fatalf("second request = %+v, %v: want refused", o2, err)
	}
	// The ride finishes by itself (finish delay of the peer, 2 s by default).
	waitFor(t, ctx, "passenger's ride completed", func() bool {
		p, err := tg.Passenger(ctx, pas)
		return err == nil && p.Ride == "" && p.Rides == 1
	})
	if o.Driver == drv {
		d, err := tg.Driver(ctx, drv)
		if err != nil || d.Status != "free" || d.Joined != cell || d.Ride != "" {
			t.Fatalf("driver after finish = %+v, %v", d, err)
		}
	}
	var started, completed int
	waitFor(t, ctx, "ride-completed event", func() bool {
		ev, err := tg.Events(ctx)
		if err != nil {
			return false
		}
		started, completed = 0, 0
		for _, e := range ev {
			if e.Ride == o.Ride {
				switch e.Kind {
				case "ride-started":
					started++
				case "ride-completed":
					completed++
				}
			}
		}
		return completed == 1
	})
	if started != 1 || completed != 1 {
		t.Fatalf("ride-events for %s: %d started, %d completed", o.Ride, started, completed)
	}
	// A request in a far corner with (most likely) no free driver around
	// fails and leaves the passenger without a ride.
	if o3, err := tg.Request(ctx, pas2, "99-99"); err == nil && o3.Failed {
		if r, err := tg.Ride(ctx, o3.Ride); err != nil || r.Status != "failed" {
			t.Fatalf("failed ride %s = %+v, %v", o3.Ride, r, err)
		}
		waitFor(t, ctx, "failed ride cleared", func() bool {
			p, err := tg.Passenger(ctx, pas2)
			return err == nil && p.Ride == ""
		})
	} else if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached before timeout", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
