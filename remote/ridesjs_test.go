package remote

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/shardfn/shardfn/engine"
)

// miniRuntime is a single-threaded stand-in for the engine's remote path,
// enough to run a chain of remote functions in tests: per-address batches
// of every queued message, spec registration on incomplete context, state
// kept as bytes, sends routed, delayed sends held until released, egress
// and replies (sends to shardfn/reply/<token>) collected.
type miniRuntime struct {
	t       *testing.T
	f       *Function
	specs   map[string][]engine.ValueSpec
	state   map[engine.Address]map[string][]byte
	queue   []queuedInv
	delayed []queuedInv
	egress  []engine.EgressOut
	replies map[string]engine.Message
	batches int
}

func newMiniRuntime(t *testing.T, f *Function) *miniRuntime {
	return &miniRuntime{t: t, f: f, specs: map[string][]engine.ValueSpec{},
		state: map[engine.Address]map[string][]byte{}, replies: map[string]engine.Message{}}
}

func (rt *miniRuntime) send(to engine.Address, inv engine.RemoteInvocation) {
	rt.queue = append(rt.queue, queuedInv{To: to, Inv: inv})
}

// run processes messages until none is queued.
func (rt *miniRuntime) run() {
	for len(rt.queue) > 0 {
		target := rt.queue[0].To
		var invs []engine.RemoteInvocation
		rest := rt.queue[:0:0]
		for _, q := range rt.queue {
			if q.To == target {
				invs = append(invs, q.Inv)
			} else {
				rest = append(rest, q)
			}
		}
		rt.queue = rest
		rt.invoke(target, invs)
	}
}

func (rt *miniRuntime) invoke(target engine.Address, invs []engine.RemoteInvocation) {
	for round := 0; ; round++ {
		if round > 3 {
			rt.t.Fatalf("%v: incomplete context does not converge", target)
		}
		b := &engine.RemoteBatch{Target: target, Invocations: invs}
		for _, s := range rt.specs[target.FunctionType()] {
			v, ok := rt.state[target][s.Name]
			b.States = append(b.States, engine.StateValue{Spec: s, Value: v, Present: ok})
		}
		rt.batches++
		res := invoke(rt.t, rt.f, b)
		if res.Err != nil {
			rt.t.Fatalf("%v: %v", target, res.Err)
		}
		if len(res.MissingSpecs) > 0 {
			rt.specs[target.FunctionType()] = append(rt.specs[target.FunctionType()], res.MissingSpecs...)
			continue
		}
		st := rt.state[target]
		if st == nil {
			st = map[string][]byte{}
			rt.state[target] = st
		}
		for _, m := range res.Mutations {
			if m.Delete {
				delete(st, m.Name)
			} else {
				st[m.Name] = m.Value.Value
			}
		}
		for _, s := range res.Sends {
			if s.To.Namespace == ReplyNamespace && s.To.Type == ReplyType {
				if _, dup := rt.replies[s.To.ID]; dup {
					rt.t.Fatalf("two replies for %s", s.To.ID)
				}
				rt.replies[s.To.ID] = s.Message
				continue
			}
			rt.send(s.To, engine.RemoteInvocation{Caller: target, HasCaller: true, Message: s.Message})
		}
		for _, d := range res.Delayed {
			if d.Delay <= 0 {
				rt.t.Fatalf("delayed send without delay: %+v", d)
			}
			rt.delayed = append(rt.delayed, queuedInv{To: d.To, Inv: engine.RemoteInvocation{Caller: target, HasCaller: true, Message: d.Message}})
		}
		rt.egress = append(rt.egress, res.Egress...)
		return
	}
}

func (rt *miniRuntime) releaseDelayed() {
	rt.queue = append(rt.queue, rt.delayed...)
	rt.delayed = nil
}

func jsonMsg(t *testing.T, typ string, v any) engine.Message {
	m, err := engine.JSON(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRidesJS runs RS-1 flows through the JavaScript SDK implementation
// (remote/js/rides.js): driver registration, a match in the request's own
// cell, a match found by neighbour search, a failure, ride completion by the
// delayed finish message, and the state encodings shared with package rides.
func TestRidesJS(t *testing.T) {
	t.Setenv("RIDES_GRID", "10")
	base := startNode(t, "rides.js")
	c := newTestClient(t)
	ep := jsEndpoint(base)
	ep.Namespace = "rides"
	rt := newMiniRuntime(t, newTestFunction(t, c, ep))
	ridesJSDrivers(t, rt)
	ridesJSMatches(t, rt)
	ridesJSRefusals(t, rt)
	ridesJSCompletions(t, rt)
}

func jsDriver(id string) engine.Address {
	return engine.Address{Namespace: "rides", Type: "driver", ID: id}
}
func jsPassenger(id string) engine.Address {
	return engine.Address{Namespace: "rides", Type: "passenger", ID: id}
}
func jsCell(id string) engine.Address {
	return engine.Address{Namespace: "rides", Type: "geocell", ID: id}
}

// jsLocation is a driver's location in cell c.
func jsLocation(t *testing.T, c string) engine.RemoteInvocation {
	return engine.RemoteInvocation{Message: jsonMsg(t, "rides/location", map[string]string{"cell": c})}
}

// jsRequest is a passenger's ride request in cell c, answered to
// shardfn/reply/<token>.
func jsRequest(t *testing.T, c, token string) engine.RemoteInvocation {
	return engine.RemoteInvocation{Caller: engine.Address{Namespace: ReplyNamespace, Type: ReplyType, ID: token}, HasCaller: true,
		Message: jsonMsg(t, "rides/request", map[string]string{"cell": c})}
}

// ridesJSDrivers: drivers register in their cells; one moves.
func ridesJSDrivers(t *testing.T, rt *miniRuntime) {
	rt.send(jsDriver("d-1"), jsLocation(t, "1-1"))
	rt.send(jsDriver("d-2"), jsLocation(t, "1-1"))
	rt.send(jsDriver("d-3"), jsLocation(t, "5-5"))
	rt.send(jsDriver("d-3"), jsLocation(t, "6-6")) // moves: leaves 5-5, joins 6-6
	rt.run()
	if got := string(rt.state[jsDriver("d-3")]["joined"]); got != "6-6" {
		t.Fatalf("d-3 joined %q", got)
	}
	if _, ok := rt.state[jsCell("5-5")]["free"]; ok {
		t.Fatal("5-5 still holds d-3")
	}
	if got := string(rt.state[jsDriver("d-1")]["status"]); got != "free" {
		t.Fatalf("d-1 status %q (raw bytes, as package rides stores it)", got)
	}
}

// ridesJSMatches: a match in the request's own cell, one found by the
// neighbour search, and a failure with nobody within one cell.
func ridesJSMatches(t *testing.T, rt *miniRuntime) {
	rt.send(jsPassenger("p-1"), jsRequest(t, "1-1", "tok1"))
	rt.send(jsPassenger("p-2"), jsRequest(t, "1-2", "tok2")) // no driver in 1-2; hop 2 (1-1) has one
	rt.send(jsPassenger("p-3"), jsRequest(t, "9-9", "tok3")) // nobody within one cell
	rt.run()

	type outcome struct {
		Ride, Driver string
		Failed       bool
	}
	outs := map[string]outcome{}
	for tok, m := range rt.replies {
		var o outcome
		if m.Type != "rides/outcome" || json.Unmarshal(m.Value, &o) != nil {
			t.Fatalf("reply %s: %+v", tok, m)
		}
		outs[tok] = o
	}
	if len(outs) != 3 || outs["tok1"].Ride != "p-1-1" || outs["tok2"].Ride != "p-2-1" || !outs["tok3"].Failed || outs["tok3"].Ride != "p-3-1" {
		t.Fatalf("outcomes %+v", outs)
	}
	got := []string{outs["tok1"].Driver, outs["tok2"].Driver}
	slices.Sort(got)
	if got[0] != "d-1" || got[1] != "d-2" {
		t.Fatalf("matched drivers %v, want d-1 and d-2", got)
	}
	if _, ok := rt.state[jsCell("1-1")]["free"]; ok {
		t.Fatal("cell 1-1 still lists a driver on a ride")
	}
	if string(rt.state[jsPassenger("p-3")]["ride"]) != "" {
		t.Fatal("p-3 keeps a failed ride")
	}
	started := 0
	for _, e := range rt.egress {
		var ev struct{ Kind, Ride, Driver, Passenger string }
		if e.Name != "ride-events" || e.Message.Type != "rides/event" || json.Unmarshal(e.Message.Value, &ev) != nil {
			t.Fatalf("egress %+v", e)
		}
		if ev.Kind == "ride-started" {
			started++
		}
	}
	if started != 2 || len(rt.egress) != 2 {
		t.Fatalf("%d egress records, %d started", len(rt.egress), started)
	}
	if len(rt.delayed) != 2 {
		t.Fatalf("%d delayed finish messages, want 2", len(rt.delayed))
	}
}

// ridesJSRefusals: a second request while a ride is active is answered at
// once as failed; without a shardfn/reply caller the answer goes to
// shardfn/reply/chain.
func ridesJSRefusals(t *testing.T, rt *miniRuntime) {
	// A second request while p-1 rides is answered at once as failed.
	rt.send(jsPassenger("p-1"), jsRequest(t, "1-1", "tok4"))
	rt.run()
	if o := rt.replies["tok4"]; string(o.Value) != `{"ride":"","failed":true}` {
		t.Fatalf("busy passenger answer %s", o.Value)
	}

	// Without a shardfn/reply caller the answer goes to shardfn/reply/chain.
	rt.send(jsPassenger("p-5"), engine.RemoteInvocation{Message: jsonMsg(t, "rides/request", map[string]string{"cell": "3-3"})})
	rt.run()
	if o := rt.replies["chain"]; string(o.Value) != `{"ride":"p-5-1","failed":true}` {
		t.Fatalf("chain reply %s", o.Value)
	}
}

// ridesJSCompletions: the delayed finish messages complete the rides; the
// state encodings are package rides'.
func ridesJSCompletions(t *testing.T, rt *miniRuntime) {
	rt.releaseDelayed()
	rt.run()
	completed := 0
	for _, e := range rt.egress {
		var ev struct{ Kind string }
		_ = json.Unmarshal(e.Message.Value, &ev)
		if ev.Kind == "ride-completed" {
			completed++
		}
	}
	if completed != 2 {
		t.Fatalf("%d rides completed, want 2", completed)
	}
	for _, p := range []string{"p-1", "p-2"} {
		n, err := engine.DecodeLongWrapper(rt.state[jsPassenger(p)]["rides"])
		if err != nil || n != 1 || len(rt.state[jsPassenger(p)]["ride"]) != 0 {
			t.Fatalf("%s: rides %d, ride %q", p, n, rt.state[jsPassenger(p)]["ride"])
		}
	}
	for _, d := range []string{"d-1", "d-2"} {
		if s := rt.state[jsDriver(d)]; string(s["status"]) != "free" || string(s["joined"]) != "1-1" {
			t.Fatalf("%s state %q", d, s)
		}
	}
	// The free set uses package rides' encoding: uvarint length + id each.
	set := rt.state[jsCell("1-1")]["free"]
	if len(set) != 8 || set[0] != 3 || set[4] != 3 {
		t.Fatalf("free set bytes %q", set)
	}
	if spec := rt.specs["rides/geocell"]; len(spec) != 1 || spec[0].Type != "rides/set" {
		t.Fatalf("geocell specs %+v", spec)
	}
}

// queuedInv is a message waiting in a miniRuntime.
type queuedInv struct {
	To  engine.Address
	Inv engine.RemoteInvocation
}
