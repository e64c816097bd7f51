package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// forEach calls fn for every id of list, from workers goroutines taking the
// next index in turn. It stops at the first error, which it returns, or
// when ctx ends.
func forEach(ctx context.Context, workers int, list []string, fn func(i int, id string) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(list) || ctx.Err() != nil {
					return
				}
				if err := fn(i, list[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// seed has every driver report its location once (each retried up to 20
// times), so that cells have free drivers when the load starts.
func seed(ctx context.Context, t Target, cfg Config, ids instanceIDs) error {
	r := rand.New(rand.NewPCG(cfg.Seed, 0))
	cells := make([]string, len(ids.drivers))
	for i := range cells {
		cells[i] = ids.cells[r.IntN(len(ids.cells))]
	}
	return forEach(ctx, min(cfg.Concurrency, 256), ids.drivers, func(i int, driver string) error {
		var err error
		for try := 0; try < 20; try++ {
			octx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			err = t.Location(octx, driver, cells[i])
			cancel()
			if err == nil {
				return nil
			}
			time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
		}
		return fmt.Errorf("loadgen: seeding driver %s: %w", driver, err)
	})
}

// drain waits for the finish delay to pass and then until every started
// ride (by answer or by record) has its ride-completed record, at most
// DrainTimeout; it returns the final ride-events.
func drain(ctx context.Context, t Target, cfg Config, answers []Answer) ([]RideEvent, bool, error) {
	maxDelay := time.Duration(float64(cfg.FinishDelay) * (1 + cfg.FinishJitter))
	select {
	case <-time.After(maxDelay + 200*time.Millisecond):
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	deadline := time.Now().Add(cfg.DrainTimeout)
	for {
		events, err := t.Events(ctx)
		if err != nil {
			return nil, false, err
		}
		if len(unfinishedRides(answers, events)) == 0 {
			return events, true, nil
		}
		if time.Now().After(deadline) {
			return events, false, nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// unfinishedRides are the rides started (by answer or by record) without a
// ride-completed record.
func unfinishedRides(answers []Answer, events []RideEvent) map[string]bool {
	want := map[string]bool{}
	for _, a := range answers {
		if a.Outcome.Ride != "" && !a.Outcome.Failed {
			want[a.Outcome.Ride] = true
		}
	}
	for _, e := range events {
		if e.Kind == "ride-started" {
			want[e.Ride] = true
		}
	}
	for _, e := range events {
		if e.Kind == "ride-completed" {
			delete(want, e.Ride)
		}
	}
	return want
}

// gatherWorkers is how many state reads gather makes at once.
const gatherWorkers = 32

// gather reads the state the checker needs, with parallel reads: every
// driver and cell, then every ride and passenger that the answers, the
// events or those states name.
func gather(ctx context.Context, t Target, ids instanceIDs, answers []Answer, events []RideEvent) (Snapshot, error) {
	s := Snapshot{Answers: answers, Events: events,
		Drivers: map[string]DriverState{}, Passengers: map[string]PassengerState{},
		Rides: map[string]RideState{}, Cells: map[string]CellState{}}
	var mu sync.Mutex // guards s's maps and the sets below
	read := func(list []string, what string, fn func(id string) error) error {
		return forEach(ctx, gatherWorkers, list, func(_ int, id string) error {
			if err := fn(id); err != nil {
				return fmt.Errorf("%s %s: %w", what, id, err)
			}
			return nil
		})
	}
	if err := read(ids.drivers, "driver", func(id string) error {
		d, err := t.Driver(ctx, id)
		if err == nil && d != (DriverState{}) {
			mu.Lock()
			s.Drivers[id] = d
			mu.Unlock()
		}
		return err
	}); err != nil {
		return s, err
	}
	if err := read(ids.cells, "cell", func(id string) error {
		c, err := t.Cell(ctx, id)
		if err == nil && len(c.Free) > 0 {
			mu.Lock()
			s.Cells[id] = c
			mu.Unlock()
		}
		return err
	}); err != nil {
		return s, err
	}
	rideSet, passSet := namedRidesAndPassengers(s)
	if err := read(sortedKeys(rideSet), "ride", func(id string) error {
		r, err := t.Ride(ctx, id)
		if err == nil {
			mu.Lock()
			s.Rides[id] = r
			if r.Passenger != "" {
				passSet[r.Passenger] = true
			}
			mu.Unlock()
		}
		return err
	}); err != nil {
		return s, err
	}
	if err := read(sortedKeys(passSet), "passenger", func(id string) error {
		p, err := t.Passenger(ctx, id)
		if err == nil {
			mu.Lock()
			s.Passengers[id] = p
			mu.Unlock()
		}
		return err
	}); err != nil {
		return s, err
	}
	return s, nil
}

// namedRidesAndPassengers are the rides and passengers that s's answers,
// events and drivers name.
func namedRidesAndPassengers(s Snapshot) (rides, passengers map[string]bool) {
	rides, passengers = map[string]bool{}, map[string]bool{}
	for _, a := range s.Answers {
		if a.Outcome.Ride != "" {
			rides[a.Outcome.Ride] = true
		}
		passengers[a.Passenger] = true
	}
	for _, e := range s.Events {
		rides[e.Ride] = true
		passengers[e.Passenger] = true
	}
	for _, d := range s.Drivers {
		if d.Ride != "" {
			rides[d.Ride] = true
		}
	}
	return rides, passengers
}

func countInstances(s Snapshot) int64 {
	n := len(s.Drivers) + len(s.Cells) + len(s.Rides)
	for _, p := range s.Passengers {
		if p != (PassengerState{}) {
			n++
		}
	}
	return int64(n)
}
