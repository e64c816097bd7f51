package loadgen

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Answer is one answered request: who asked and what came back.
type Answer struct {
	Passenger string
	Outcome   Outcome
}

// Snapshot is everything the invariant checker looks at, gathered after the
// engine drained: the answers the load generator received, the ride-events
// log, and the state of every driver and cell and of the rides and
// passengers that the answers or events name.
type Snapshot struct {
	Answers    []Answer
	Events     []RideEvent
	Drivers    map[string]DriverState
	Passengers map[string]PassengerState
	Rides      map[string]RideState
	Cells      map[string]CellState
}

// InvariantResult is the verdict on one invariant.
type InvariantResult struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Checked int    `json:"checked"`
	// Failed counts violating ids; Examples holds the first few.
	Failed   int      `json:"failed"`
	Examples []string `json:"examples,omitempty"`
}

// Invariant names, as reported.
const (
	InvOneDriverPerRide   = "one-driver-per-ride"
	InvDriverOneRide      = "driver-in-one-ride-at-a-time"
	InvOutcomeMatchesRide = "one-outcome-matching-ride-state"
	InvStartedCompleted   = "started-rides-completed"
	InvEventsOnce         = "events-once-per-ride"
	InvFreeSetIffFree     = "free-set-iff-free"
	InvPassengerConsist   = "passenger-consistent"
)

const maxExamples = 5

type verdict struct {
	r InvariantResult
}

func newVerdict(name string) *verdict { return &verdict{r: InvariantResult{Name: name, OK: true}} }

func (v *verdict) check() { v.r.Checked++ }

func (v *verdict) fail(format string, args ...any) {
	v.r.OK = false
	v.r.Failed++
	if len(v.r.Examples) < maxExamples {
		v.r.Examples = append(v.r.Examples, fmt.Sprintf(format, args...))
	}
}

// Check evaluates the invariants of workload-rides.md on a drained
// snapshot and returns one result per invariant, in a fixed order.
func Check(s Snapshot) []InvariantResult {
	rides := indexRides(s.Events)
	return []InvariantResult{
		checkOneDriverPerRide(s, rides),
		checkDriverOneRide(s),
		checkOutcomes(s),
		checkStartedCompleted(s, rides),
		checkEventsOnce(s, rides),
		checkFreeSets(s),
		checkPassengers(s, rides),
	}
}

// rideRecords is the ride-events log by ride.
type rideRecords struct {
	started, completed map[string][]RideEvent
	order              []string // the rides in the order of their first record
}

func indexRides(events []RideEvent) rideRecords {
	x := rideRecords{started: map[string][]RideEvent{}, completed: map[string][]RideEvent{}}
	for _, e := range events {
		var by map[string][]RideEvent
		switch e.Kind {
		case "ride-started":
			by = x.started
		case "ride-completed":
			by = x.completed
		default:
			continue
		}
		if len(x.started[e.Ride]) == 0 && len(x.completed[e.Ride]) == 0 {
			x.order = append(x.order, e.Ride)
		}
		by[e.Ride] = append(by[e.Ride], e)
	}
	return x
}

// checkEventsOnce: exactly one ride-started and at most one ride-completed
// per ride, completed only after started, known kinds.
func checkEventsOnce(s Snapshot, x rideRecords) InvariantResult {
	v := newVerdict(InvEventsOnce)
	for i, e := range s.Events {
		if e.Kind != "ride-started" && e.Kind != "ride-completed" {
			v.fail("record %d has kind %q", i, e.Kind)
		}
	}
	for _, id := range x.order {
		v.check()
		ns, nc := len(x.started[id]), len(x.completed[id])
		switch {
		case ns != 1:
			v.fail("ride %s: %d ride-started records", id, ns)
		case nc > 1:
			v.fail("ride %s: %d ride-completed records", id, nc)
		}
	}
	return v.r
}

// checkOneDriverPerRide: every record and the ride's state name the same
// driver.
func checkOneDriverPerRide(s Snapshot, x rideRecords) InvariantResult {
	v := newVerdict(InvOneDriverPerRide)
	for _, id := range x.order {
		v.check()
		drivers := map[string]bool{}
		for _, e := range x.started[id] {
			drivers[e.Driver] = true
		}
		for _, e := range x.completed[id] {
			drivers[e.Driver] = true
		}
		if r, ok := s.Rides[id]; ok && r.Driver != "" {
			drivers[r.Driver] = true
		}
		if len(drivers) != 1 || drivers[""] {
			v.fail("ride %s: drivers %v", id, sortedKeys(drivers))
		}
	}
	return v.r
}

// checkDriverOneRide: a driver is in at most one active ride, and an
// on-ride driver's ride is active and names it.
func checkDriverOneRide(s Snapshot) InvariantResult {
	v := newVerdict(InvDriverOneRide)
	active := map[string][]string{}
	for id, r := range s.Rides {
		if r.Status == "started" && r.Driver != "" {
			active[r.Driver] = append(active[r.Driver], id)
		}
	}
	for _, d := range sortedKeys(s.Drivers) {
		st := s.Drivers[d]
		v.check()
		a := active[d]
		slices.Sort(a)
		switch {
		case len(a) > 1:
			v.fail("driver %s: in active rides %v", d, a)
		case st.Status == "on_ride" && (len(a) != 1 || a[0] != st.Ride):
			v.fail("driver %s: on_ride for %q but active rides %v", d, st.Ride, a)
		case st.Status != "on_ride" && len(a) > 0:
			v.fail("driver %s: status %q but active ride %v", d, st.Status, a)
		}
	}
	return v.r
}

// checkOutcomes: every answered request has one outcome, and it is what
// the ride says.
func checkOutcomes(s Snapshot) InvariantResult {
	v := newVerdict(InvOutcomeMatchesRide)
	seen := map[string]int{}
	for _, a := range s.Answers {
		if a.Outcome.Ride != "" {
			seen[a.Outcome.Ride]++
		}
	}
	for _, a := range s.Answers {
		o := a.Outcome
		if o.Ride == "" {
			if !o.Failed {
				v.check()
				v.fail("passenger %s: outcome without a ride that is not failed", a.Passenger)
			}
			continue // refused: the passenger had an active ride
		}
		v.check()
		r, ok := s.Rides[o.Ride]
		switch {
		case seen[o.Ride] > 1:
			v.fail("ride %s: answered %d times", o.Ride, seen[o.Ride])
		case !ok || r.Status == "":
			v.fail("ride %s: answered %+v but has no state", o.Ride, o)
		case r.Passenger != a.Passenger:
			v.fail("ride %s: asked by %s but belongs to %q", o.Ride, a.Passenger, r.Passenger)
		case o.Failed && r.Status != "failed":
			v.fail("ride %s: answered failed but status %q", o.Ride, r.Status)
		case !o.Failed && (r.Driver != o.Driver || (r.Status != "started" && r.Status != "completed")):
			v.fail("ride %s: answered driver %s but state has driver %q status %q", o.Ride, o.Driver, r.Driver, r.Status)
		}
	}
	return v.r
}

// checkStartedCompleted: every started ride (by record or by answer)
// completed after draining, with its ride-completed record.
func checkStartedCompleted(s Snapshot, x rideRecords) InvariantResult {
	v := newVerdict(InvStartedCompleted)
	startedRides := map[string]bool{}
	for id := range x.started {
		startedRides[id] = true
	}
	for _, a := range s.Answers {
		if a.Outcome.Ride != "" && !a.Outcome.Failed {
			startedRides[a.Outcome.Ride] = true
		}
	}
	for _, id := range sortedKeys(startedRides) {
		v.check()
		r := s.Rides[id]
		switch {
		case r.Status != "completed":
			v.fail("ride %s: status %q after draining", id, r.Status)
		case len(x.completed[id]) != 1:
			v.fail("ride %s: completed with %d ride-completed records", id, len(x.completed[id]))
		case len(x.started[id]) == 0:
			v.fail("ride %s: completed without a ride-started record", id)
		}
	}
	return v.r
}

// checkFreeSets: a driver is in exactly one free set iff it is free, and
// that set is the one it joined.
func checkFreeSets(s Snapshot) InvariantResult {
	v := newVerdict(InvFreeSetIffFree)
	in := map[string][]string{}
	for _, c := range sortedKeys(s.Cells) {
		for _, d := range s.Cells[c].Free {
			in[d] = append(in[d], c)
		}
	}
	for d := range in {
		if _, ok := s.Drivers[d]; !ok {
			v.check()
			v.fail("driver %s: in free sets %v but unknown", d, in[d])
		}
	}
	for _, d := range sortedKeys(s.Drivers) {
		st := s.Drivers[d]
		v.check()
		cells := in[d]
		free := st.Status == "free"
		switch {
		case free && len(cells) != 1:
			v.fail("driver %s: free but in free sets %v", d, cells)
		case free && cells[0] != st.Joined:
			v.fail("driver %s: free in %s but joined %q", d, cells[0], st.Joined)
		case !free && len(cells) != 0:
			v.fail("driver %s: status %q but in free sets %v", d, st.Status, cells)
		}
	}
	return v.r
}

// checkPassengers: after draining no passenger has an active ride, and
// each counts exactly its completed rides.
func checkPassengers(s Snapshot, x rideRecords) InvariantResult {
	v := newVerdict(InvPassengerConsist)
	completedBy := map[string]int64{}
	for _, es := range x.completed {
		if len(es) > 0 {
			completedBy[es[0].Passenger]++
		}
	}
	for _, p := range sortedKeys(s.Passengers) {
		st := s.Passengers[p]
		v.check()
		switch {
		case st.Ride != "":
			v.fail("passenger %s: still has ride %s after draining (status %q)", p, st.Ride, s.Rides[st.Ride].Status)
		case st.Rides != completedBy[p]:
			v.fail("passenger %s: counts %d rides, ride-events has %d completed", p, st.Rides, completedBy[p])
		}
	}
	return v.r
}

// InvariantsSummary is "ok" when every result holds, otherwise the failing
// names with their counts.
func InvariantsSummary(rs []InvariantResult) string {
	if len(rs) == 0 {
		return "skipped"
	}
	var bad []string
	for _, r := range rs {
		if !r.OK {
			bad = append(bad, fmt.Sprintf("%s(%d)", r.Name, r.Failed))
		}
	}
	if len(bad) == 0 {
		return "ok"
	}
	return "failed: " + strings.Join(bad, ", ")
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
