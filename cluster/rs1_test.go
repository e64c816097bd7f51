package cluster

import (
	"context"

	"errors"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/loadgen"
	"github.com/shardfn/shardfn/rides"
)

// nodesTarget runs the RS-1 benchmark against the nodes of a test cluster:
// ingress through any node, state reads from the owner, ride events from
// the egress topic.
type nodesTarget struct{ c *testCluster }

func (t nodesTarget) Name() string { return "cluster" }
func (t nodesTarget) Close() error { return nil }

// retry runs fn on the nodes in turn while they answer "not ready" or
// "not the owner" (a rebalance).
func (t nodesTarget) retry(ctx context.Context, fn func(n *Node) error) error {
	for i := 0; ; i++ {
		n := t.c.any(i)
		err := fn(n)
		if err == nil || !(errors.Is(err, ErrNotReady) || errors.Is(err, engine.ErrNotOwner) || errors.Is(err, engine.ErrClosed)) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (t nodesTarget) Location(ctx context.Context, driver, cell string) error {
	return t.retry(ctx, func(n *Node) error {
		_, err := n.Send(ctx, rides.DriverAddr(driver), rides.LocationMessage(cell))
		return err
	})
}

func (t nodesTarget) Request(ctx context.Context, passenger, cell string) (loadgen.Outcome, error) {
	var m engine.Message
	err := t.retry(ctx, func(n *Node) (err error) {
		m, err = n.Request(ctx, rides.PassengerAddr(passenger), rides.RequestMessage(cell))
		return err
	})
	if err != nil {
		return loadgen.Outcome{}, err
	}
	o, err := rides.DecodeOutcome(m.Value)
	return loadgen.Outcome{Ride: o.Ride, Driver: o.Driver, Failed: o.Failed}, err
}

func (t nodesTarget) Events(ctx context.Context) ([]loadgen.RideEvent, error) {
	return loadgen.ReadEvents(func(from uint64) (recs []engine.EgressRecord, err error) {
		err = t.retry(ctx, func(n *Node) (err error) {
			recs, err = n.ReadEgress(ctx, rides.EgressName, from, 10000, 0, 0)
			return err
		})
		return recs, err
	})
}

// Quiesce waits until no input record is unconsumed (every input
// partition's committed offset is its end) and every node serves its
// partitions, twice, a finish delay apart (delayed messages may still
// fire in between).
func (t nodesTarget) Quiesce(ctx context.Context) error {
	for range 2 {
		for {
			idle, err := t.idle(ctx)
			if err != nil {
				return err
			}
			if idle {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		time.Sleep(time.Second)
	}
	return nil
}

// idle reports whether every node is ready and none has polled or
// processed anything for half a second.
func (t nodesTarget) idle(context.Context) (bool, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for _, x := range t.c.nodes {
		if !x.Ready() || x.changed.Load() || time.Since(time.Unix(0, x.Stats().LastActive.Load())) < 500*time.Millisecond {
			return false, nil
		}
	}
	return true, nil
}

func state[S any](ctx context.Context, t nodesTarget, addr engine.Address, decode func([]engine.StateValue) (S, error)) (S, error) {
	var vs []engine.StateValue
	err := t.retry(ctx, func(n *Node) (err error) {
		vs, err = n.State(ctx, addr)
		return err
	})
	if err != nil {
		var zero S
		return zero, err
	}
	return decode(vs)
}

func (t nodesTarget) Driver(ctx context.Context, id string) (loadgen.DriverState, error) {
	s, err := state(ctx, t, rides.DriverAddr(id), rides.DecodeDriver)
	return loadgen.DriverState(s), err
}

func (t nodesTarget) Passenger(ctx context.Context, id string) (loadgen.PassengerState, error) {
	s, err := state(ctx, t, rides.PassengerAddr(id), rides.DecodePassenger)
	return loadgen.PassengerState{Ride: s.Ride, Rides: s.Rides}, err
}

func (t nodesTarget) Ride(ctx context.Context, id string) (loadgen.RideState, error) {
	s, err := state(ctx, t, rides.RideAddr(id), rides.DecodeRide)
	return loadgen.RideState{Passenger: s.Passenger, Driver: s.Driver, Cell: s.Cell, Status: s.Status}, err
}

func (t nodesTarget) Cell(ctx context.Context, id string) (loadgen.CellState, error) {
	s, err := state(ctx, t, rides.CellAddr(id), rides.DecodeCell)
	return loadgen.CellState(s), err
}

// TestRS1ThreeNodesJoinLeave runs the RS-1 workload on three nodes while
// a fourth joins and one of the first leaves; every RS-1 invariant (each
// ride started and completed once, one driver per ride, free sets
// consistent, passengers' counts) holds at the end.
func TestRS1ThreeNodesJoinLeave(t *testing.T) {
	c := newTestCluster(t, 16)
	c.specs = rides.Specs()
	c.start("a")
	c.start("b")
	c.start("c")
	c.settled(30 * time.Second)
	cfg := loadgen.Config{Duration: 6 * time.Second, Warmup: -1, Concurrency: 16, Drivers: 200, Passengers: 400, Grid: 10,
		RequestShare: 0.2, FinishDelay: 300 * time.Millisecond, RequestTimeout: 10 * time.Second, DrainTimeout: 30 * time.Second}
	type result struct {
		r   *loadgen.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := loadgen.Run(context.Background(), nodesTarget{c}, cfg)
		done <- result{r, err}
	}()
	time.Sleep(2 * time.Second)
	c.start("d")
	time.Sleep(2 * time.Second)
	c.stop("b", true)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	t.Logf("RS-1 on kfake, 3 nodes with a join and a leave: %.0f events/s, %d rides started, %d errors; %s", r.EventsPerS, r.Started, r.Errors, r.InvariantsText)
	if r.Started == 0 {
		t.Fatal("no ride started")
	}
	for _, inv := range r.Invariants {
		if !inv.OK {
			t.Errorf("invariant %s broken: %v", inv.Name, inv)
		}
	}
	if !r.Drained {
		t.Error("the run did not drain: started rides never completed")
	}
}
