package rides

import (
	"context"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// TestOnEngine runs a ride through the real engine, in memory and durable:
// locations, a request answered by the ride, the delayed finish, egress and
// state.
func TestOnEngine(t *testing.T) {
	t.Run("memory", func(t *testing.T) { onEngine(t, engine.Options{Shards: 2}) })
	t.Run("durable", func(t *testing.T) { onEngine(t, engine.Options{Shards: 2, DataDir: t.TempDir()}) })
}

func onEngine(t *testing.T, opts engine.Options) {
	specs, err := NewSpecs(Config{FinishDelay: 20 * time.Millisecond, FinishJitter: -1, Grid: 10})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(opts, specs...)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	state := func(a engine.Address) []engine.StateValue {
		t.Helper()
		vs, err := e.State(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}

	if _, err := e.Send(ctx, DriverAddr("d-1"), LocationMessage("3-3")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Send(ctx, DriverAddr("d-2"), LocationMessage("5-5")); err != nil {
		t.Fatal(err)
	}
	// The join messages flow after the location is acknowledged; wait for
	// the cell to hold d-1.
	for {
		c, err := DecodeCell(state(CellAddr("3-3")))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Free) == 1 && c.Free[0] == "d-1" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cell 3-3 never got d-1: %v", c.Free)
		}
		time.Sleep(5 * time.Millisecond)
	}
	reply, err := e.Request(ctx, PassengerAddr("p-1"), RequestMessage("3-3"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := DecodeOutcome(reply.Value)
	if err != nil || reply.Type != MsgOutcome || o != (Outcome{Ride: "p-1-1", Driver: "d-1"}) {
		t.Fatalf("reply %q %s: %+v %v", reply.Type, reply.Value, o, err)
	}
	// Wait for the ride to complete via the delayed finish.
	var evs []Event
	for len(evs) < 2 {
		recs, err := e.ReadEgress(ctx, EgressName, uint64(len(evs)), 10, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			ev, err := DecodeEvent(r.Message.Value)
			if err != nil {
				t.Fatalf("record %d %q: %v", r.Offset, r.Message.Value, err)
			}
			evs = append(evs, ev)
		}
	}
	if evs[0].Kind != KindStarted || evs[1].Kind != KindCompleted || evs[1].Ride != "p-1-1" || evs[1].Driver != "d-1" {
		t.Fatalf("events %+v", evs)
	}
	var p PassengerState
	for {
		p, err = DecodePassenger(state(PassengerAddr("p-1")))
		if err != nil {
			t.Fatal(err)
		}
		if p.Rides == 1 || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p != (PassengerState{Rides: 1, Seq: 1}) {
		t.Fatalf("passenger %+v", p)
	}
	r, err := DecodeRide(state(RideAddr("p-1-1")))
	if err != nil || r.Status != StatusCompleted || r.Driver != "d-1" || r.Reply != "rides/passenger/p-1" {
		t.Fatalf("ride %+v %v", r, err)
	}
	d, err := DecodeDriver(state(DriverAddr("d-1")))
	if err != nil || d != (DriverState{Cell: "3-3", Joined: "3-3", Status: StatusFree}) {
		t.Fatalf("driver %+v %v", d, err)
	}
	// A request where no driver is near fails.
	reply, err = e.Request(ctx, PassengerAddr("p-2"), RequestMessage("9-0"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := DecodeOutcome(reply.Value); err != nil || o != (Outcome{Ride: "p-2-1", Failed: true}) {
		t.Fatalf("no-driver reply %s: %v", reply.Value, err)
	}
}
