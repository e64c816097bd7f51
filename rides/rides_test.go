package rides

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

func TestWireRoundTrip(t *testing.T) {
	for _, o := range []Outcome{{Ride: "p-1-1", Driver: "d-17"}, {Ride: "p-1-2", Failed: true}, {Failed: true}} {
		got, err := DecodeOutcome(AppendOutcome(nil, o))
		if err != nil || got != o {
			t.Fatalf("outcome %+v: got %+v, %v", o, got, err)
		}
	}
	if b := string(AppendOutcome(nil, Outcome{Ride: "r", Driver: "d-17"})); b != `{"ride":"r","driver":"d-17"}` {
		t.Fatalf("outcome JSON %s", b)
	}
	if b := string(AppendOutcome(nil, Outcome{Ride: "r", Failed: true})); b != `{"ride":"r","failed":true}` {
		t.Fatalf("failed outcome JSON %s", b)
	}
	e := Event{Kind: KindStarted, Ride: "p-9-1", Driver: "d-17", Passenger: "p-9"}
	if b := string(AppendEvent(nil, e)); b != `{"kind":"ride-started","ride":"p-9-1","driver":"d-17","passenger":"p-9"}` {
		t.Fatalf("event JSON %s", b)
	}
	if got, err := DecodeEvent(AppendEvent(nil, e)); err != nil || got != e {
		t.Fatalf("event: %+v %v", got, err)
	}
	for _, cell := range []string{"12-40", `we"ird\cell` + "\n\x01é"} {
		got, err := DecodeCellBody(AppendCellBody(nil, cell))
		if err != nil || got != cell {
			t.Fatalf("cell %q: got %q, %v", cell, got, err)
		}
	}
	if got, err := DecodeCellBody([]byte(` { "x" : 1.5e3, "ok":true, "n":null, "cell" : "3-4" } `)); err != nil || got != "3-4" {
		t.Fatalf("spaced body: %q %v", got, err)
	}
	for _, bad := range []string{``, `{`, `[]`, `{"cell":3}`, `{"cell":""}`, `{"cell":"1-1"`, `{"cell":"1-1"} x`, `{"cell":{"a":1}}`, `{"cell":"a\x01"}`, `{"other":"1"}`} {
		if _, err := DecodeCellBody([]byte(bad)); !errors.Is(err, ErrBadBody) {
			t.Errorf("DecodeCellBody(%q) = %v, want ErrBadBody", bad, err)
		}
	}
	if _, err := DecodeOutcome([]byte(`{"ride":"r"}`)); !errors.Is(err, ErrBadBody) {
		t.Errorf("outcome without driver accepted: %v", err)
	}
}

func TestFreeSet(t *testing.T) {
	set := EncodeSet("d-1", "d-22", "d-333")
	if s, e, ok, err := setFind(set, []byte("d-22")); err != nil || !ok || string(set[s:e]) != "\x04d-22" {
		t.Fatalf("find: %d %d %v %v", s, e, ok, err)
	}
	if _, _, ok, _ := setFind(set, []byte("d-2")); ok {
		t.Fatal("found a prefix")
	}
	start, id, err := setLast(set)
	if err != nil || string(id) != "d-333" || start != 9 {
		t.Fatalf("last: %d %q %v", start, id, err)
	}
	if got, err := DecodeSet(set[:start]); err != nil || !reflect.DeepEqual(got, []string{"d-1", "d-22"}) {
		t.Fatalf("decode: %v %v", got, err)
	}
	if _, err := DecodeSet([]byte{5, 'a'}); !errors.Is(err, ErrBadBody) {
		t.Fatalf("corrupt set decoded: %v", err)
	}
	if _, _, _, err := setFind([]byte{9}, []byte("x")); !errors.Is(err, ErrBadBody) {
		t.Fatalf("corrupt set searched: %v", err)
	}
}

func TestNeighbourOrder(t *testing.T) {
	c := DefaultConfig()
	var got []string
	for h := 0; h <= 9; h++ {
		if n, ok := c.neighbour("5-5", h); ok {
			got = append(got, n)
		}
	}
	want := []string{"5-5", "4-4", "5-4", "6-4", "4-5", "6-5", "4-6", "5-6", "6-6"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("neighbours of 5-5: %v", got)
	}
	got = got[:0]
	for h := 1; h <= 8; h++ {
		if n, ok := c.neighbour("0-99", h); ok {
			got = append(got, n)
		}
	}
	if want := []string{"0-98", "1-98", "1-99"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("neighbours of corner 0-99: %v", got)
	}
	if _, ok := c.neighbour("elsewhere", 1); ok {
		t.Fatal("non-grid cell has neighbours")
	}
	if _, _, ok := parseCell("1-2-3"); ok {
		t.Fatal("parsed 1-2-3")
	}
}

func TestFinishDelayJitter(t *testing.T) {
	c := DefaultConfig()
	lo, hi := time.Duration(float64(c.FinishDelay)*0.75), time.Duration(float64(c.FinishDelay)*1.25)
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		id := "p-" + CellID(i, i)
		d := c.finishDelay(id)
		if d < lo || d > hi {
			t.Fatalf("delay %v of %s outside [%v, %v]", d, id, lo, hi)
		}
		if d != c.finishDelay(id) {
			t.Fatal("delay not deterministic")
		}
		seen[d] = true
	}
	if len(seen) < 900 {
		t.Fatalf("only %d distinct delays in 1000: no jitter", len(seen))
	}
	c = Config{FinishJitter: -1}
	c.EnsureDefaults()
	if c.finishDelay("x") != 2*time.Second {
		t.Fatal("jitter not disabled")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{FinishDelay: -1}, {FinishJitter: 2}, {Grid: -3}, {MaxRetries: 5000}} {
		if _, err := NewSpecs(c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	specs := Specs()
	var names []string
	for _, s := range specs {
		names = append(names, s.Namespace+"/"+s.Type)
	}
	if !reflect.DeepEqual(names, []string{"rides/driver", "rides/passenger", "rides/geocell", "rides/ride"}) {
		t.Fatalf("specs: %v", names)
	}
}

func mustRun(t *testing.T, s *sim) {
	t.Helper()
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
}

func outcomeOf(t *testing.T, s *sim, req int) Outcome {
	t.Helper()
	for _, r := range s.replies {
		if r.req == req {
			if r.msg.Type != MsgOutcome {
				t.Fatalf("reply type %q", r.msg.Type)
			}
			o, err := DecodeOutcome(r.msg.Value)
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
	}
	t.Fatalf("request %d has no reply", req)
	return Outcome{}
}

func events(t *testing.T, s *sim) []Event {
	t.Helper()
	var out []Event
	for _, m := range s.egress {
		e, err := DecodeEvent(m.Value)
		if err != nil || m.Type != MsgEvent {
			t.Fatalf("egress %q %s: %v", m.Type, m.Value, err)
		}
		out = append(out, e)
	}
	return out
}

func TestRideLifecycle(t *testing.T) {
	s := newSim(Config{})
	s.send(DriverAddr("d-1"), LocationMessage("1-1"), 0)
	s.send(DriverAddr("d-1"), LocationMessage("2-2"), 0)
	mustRun(t, s)
	if d := s.driver("d-1"); d != (DriverState{Cell: "2-2", Joined: "2-2", Status: StatusFree}) {
		t.Fatalf("driver after moves: %+v", d)
	}
	if got := s.cell("1-1"); len(got) != 0 {
		t.Fatalf("old cell still holds %v", got)
	}
	if got := s.cell("2-2"); !reflect.DeepEqual(got, []string{"d-1"}) {
		t.Fatalf("new cell holds %v", got)
	}

	s.send(PassengerAddr("p-9"), RequestMessage("2-2"), 1)
	mustRun(t, s)
	o := outcomeOf(t, s, 1)
	if o != (Outcome{Ride: "p-9-1", Driver: "d-1"}) {
		t.Fatalf("outcome %+v", o)
	}
	if r := s.ride("p-9-1"); r.Status != StatusStarted || r.Driver != "d-1" || r.Passenger != "p-9" || r.Cell != "2-2" || r.Reply != "rides/passenger/p-9" {
		t.Fatalf("ride %+v", r)
	}
	if d := s.driver("d-1"); d != (DriverState{Cell: "2-2", Status: StatusOnRide, Ride: "p-9-1"}) {
		t.Fatalf("driver on ride: %+v", d)
	}
	if len(s.cell("2-2")) != 0 || len(s.timers) != 1 {
		t.Fatalf("cell %v timers %d", s.cell("2-2"), len(s.timers))
	}
	// A second request while the ride is active is refused.
	s.send(PassengerAddr("p-9"), RequestMessage("2-2"), 2)
	mustRun(t, s)
	if o := outcomeOf(t, s, 2); o != (Outcome{Failed: true}) {
		t.Fatalf("busy outcome %+v", o)
	}
	// A location while on a ride moves the driver but joins nothing.
	s.send(DriverAddr("d-1"), LocationMessage("3-3"), 0)
	mustRun(t, s)
	if len(s.cell("3-3")) != 0 {
		t.Fatal("on-ride driver joined a cell")
	}

	if err := s.fire(); err != nil {
		t.Fatal(err)
	}
	if d := s.driver("d-1"); d != (DriverState{Cell: "3-3", Joined: "3-3", Status: StatusFree}) {
		t.Fatalf("driver after finish: %+v", d)
	}
	if got := s.cell("3-3"); !reflect.DeepEqual(got, []string{"d-1"}) {
		t.Fatalf("cell after finish: %v", got)
	}
	if r := s.ride("p-9-1"); r.Status != StatusCompleted {
		t.Fatalf("ride after finish: %+v", r)
	}
	if p := s.passenger("p-9"); p != (PassengerState{Rides: 1, Seq: 1}) {
		t.Fatalf("passenger after finish: %+v", p)
	}
	want := []Event{
		{Kind: KindStarted, Ride: "p-9-1", Driver: "d-1", Passenger: "p-9"},
		{Kind: KindCompleted, Ride: "p-9-1", Driver: "d-1", Passenger: "p-9"},
	}
	if got := events(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %+v", got)
	}
	// The next ride gets the next id.
	s.send(PassengerAddr("p-9"), RequestMessage("3-3"), 3)
	mustRun(t, s)
	if o := outcomeOf(t, s, 3); o != (Outcome{Ride: "p-9-2", Driver: "d-1"}) {
		t.Fatalf("second ride %+v", o)
	}
}

func TestNeighbourSearchAndNone(t *testing.T) {
	s := newSim(Config{})
	s.send(DriverAddr("d-1"), LocationMessage("6-6"), 0)
	mustRun(t, s)
	s.send(PassengerAddr("p-1"), RequestMessage("5-5"), 1)
	mustRun(t, s)
	if o := outcomeOf(t, s, 1); o.Driver != "d-1" {
		t.Fatalf("neighbour not found: %+v", o)
	}
	if s.invoked[msgFind] != 9 {
		t.Fatalf("find invocations %d, want 9 (origin + 8 neighbours)", s.invoked[msgFind])
	}
	s.send(PassengerAddr("p-2"), RequestMessage("0-0"), 2)
	mustRun(t, s)
	if o := outcomeOf(t, s, 2); o != (Outcome{Ride: "p-2-1", Failed: true}) {
		t.Fatalf("no-driver outcome %+v", o)
	}
	if r := s.ride("p-2-1"); r.Status != StatusFailed {
		t.Fatalf("ride %+v", r)
	}
	if p := s.passenger("p-2"); p.Ride != "" || p.Rides != 0 {
		t.Fatalf("passenger after failure %+v", p)
	}
	if s.invoked[msgFind] != 9+4 || s.invoked[msgNone] != 1 {
		t.Fatalf("corner search: find %d none %d", s.invoked[msgFind], s.invoked[msgNone])
	}
}

func TestDeclineRetriesAtMostThree(t *testing.T) {
	s := newSim(Config{})
	// Five drivers sit in cell 1-1's set but are on rides elsewhere (a
	// state that only a race leaves behind briefly).
	var ids []string
	for i := 1; i <= 5; i++ {
		id := "d-" + CellID(i, 0)[:1]
		ids = append(ids, id)
		s.state[DriverAddr(id)] = map[string][]byte{"status": []byte(StatusOnRide), "cell": []byte("9-9")}
	}
	free := map[string][]byte{}
	for _, id := range ids {
		free[id] = nil
	}
	s.maps[CellAddr("1-1")] = map[string]map[string][]byte{"free": free}
	s.send(PassengerAddr("p-1"), RequestMessage("1-1"), 1)
	mustRun(t, s)
	if o := outcomeOf(t, s, 1); !o.Failed || o.Ride != "p-1-1" {
		t.Fatalf("outcome %+v", o)
	}
	if s.invoked[msgOffer] != 4 || s.invoked[msgDecline] != 4 {
		t.Fatalf("offers %d declines %d, want 4 (first try + 3 retries)", s.invoked[msgOffer], s.invoked[msgDecline])
	}
	// A cell offers its drivers in id order, so the one left is the last.
	if got := s.cell("1-1"); !reflect.DeepEqual(got, []string{"d-5"}) {
		t.Fatalf("cell keeps %v", got)
	}
}

// TestRejoinDuringOffer: the offering cell takes the driver, the driver
// leaves and re-joins that cell, then accepts; it must not stay in the set.
func TestRejoinDuringOffer(t *testing.T) {
	s := newSim(Config{})
	s.send(DriverAddr("d-1"), LocationMessage("1-1"), 0)
	mustRun(t, s)
	s.send(PassengerAddr("p-1"), RequestMessage("1-1"), 1)
	// Run until the offer is queued, then move the driver away and back.
	for len(s.queue) > 0 && s.queue[0].msg.Type != msgOffer {
		e := s.queue[0]
		s.queue = s.queue[1:]
		s.cur = e
		if err := s.fns[e.to.FunctionType()].Invoke(s, e.msg); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.queue) == 0 {
		t.Fatal("no offer")
	}
	offer := s.queue[0]
	s.queue = s.queue[1:]
	s.send(DriverAddr("d-1"), LocationMessage("2-2"), 0)
	s.send(DriverAddr("d-1"), LocationMessage("1-1"), 0)
	mustRun(t, s)
	if got := s.cell("1-1"); !reflect.DeepEqual(got, []string{"d-1"}) {
		t.Fatalf("re-joined set %v", got)
	}
	s.queue = append(s.queue, offer)
	mustRun(t, s)
	if d := s.driver("d-1"); d.Status != StatusOnRide || d.Joined != "" {
		t.Fatalf("driver %+v", d)
	}
	if got := s.cell("1-1"); len(got) != 0 {
		t.Fatalf("on-ride driver still in free set %v", got)
	}
}

func TestTouchAndBadInput(t *testing.T) {
	s := newSim(Config{})
	s.send(PassengerAddr("p-1"), TouchMessage("4-4"), 0)
	mustRun(t, s)
	if p := s.passenger("p-1"); p.Seen != "4-4" || p.Ride != "" {
		t.Fatalf("touched passenger %+v", p)
	}
	s.send(DriverAddr("d-1"), engine.Message{Type: MsgLocation, Value: []byte("nope")}, 0)
	if err := s.run(); !errors.Is(err, ErrBadBody) {
		t.Fatalf("bad location: %v", err)
	}
	s.queue = nil
	s.send(CellAddr("1-1"), engine.Message{Type: "rides/unknown"}, 0)
	if err := s.run(); !errors.Is(err, ErrBadBody) {
		t.Fatalf("unknown message: %v", err)
	}
}
