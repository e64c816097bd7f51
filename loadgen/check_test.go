package loadgen

import (
	"strings"
	"testing"
)

// goodSnapshot: d-1 drove p-1's ride to completion and is free in 1-1;
// d-2 is free in 2-2; p-2's ride failed; p-3 was refused.
func goodSnapshot() Snapshot {
	return Snapshot{
		Answers: []Answer{
			{Passenger: "p-1", Outcome: Outcome{Ride: "p-1-1", Driver: "d-1"}},
			{Passenger: "p-2", Outcome: Outcome{Ride: "p-2-1", Failed: true}},
			{Passenger: "p-3", Outcome: Outcome{Failed: true}},
		},
		Events: []RideEvent{
			{Kind: "ride-started", Ride: "p-1-1", Driver: "d-1", Passenger: "p-1"},
			{Kind: "ride-completed", Ride: "p-1-1", Driver: "d-1", Passenger: "p-1"},
		},
		Drivers: map[string]DriverState{
			"d-1": {Cell: "1-1", Joined: "1-1", Status: "free"},
			"d-2": {Cell: "2-2", Joined: "2-2", Status: "free"},
		},
		Passengers: map[string]PassengerState{"p-1": {Rides: 1}, "p-2": {}, "p-3": {}},
		Rides: map[string]RideState{
			"p-1-1": {Passenger: "p-1", Driver: "d-1", Cell: "1-1", Status: "completed"},
			"p-2-1": {Passenger: "p-2", Cell: "0-0", Status: "failed"},
		},
		Cells: map[string]CellState{"1-1": {Free: []string{"d-1"}}, "2-2": {Free: []string{"d-2"}}},
	}
}

func failures(rs []InvariantResult) map[string]InvariantResult {
	out := map[string]InvariantResult{}
	for _, r := range rs {
		if !r.OK {
			out[r.Name] = r
		}
	}
	return out
}

func TestCheckAcceptsConsistentSnapshot(t *testing.T) {
	rs := Check(goodSnapshot())
	if len(rs) != 7 {
		t.Fatalf("%d invariants", len(rs))
	}
	for _, r := range rs {
		if !r.OK || r.Checked == 0 {
			t.Errorf("%s: ok=%v checked=%d examples=%v", r.Name, r.OK, r.Checked, r.Examples)
		}
	}
	if s := InvariantsSummary(rs); s != "ok" {
		t.Fatalf("summary %q", s)
	}
	if s := InvariantsSummary(nil); s != "skipped" {
		t.Fatalf("empty summary %q", s)
	}
}

func TestCheckNamesEachBrokenInvariant(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(s *Snapshot)
		want   []string // invariants that must fail
		id     string   // an id the examples must name
	}{
		{"second driver in a record", func(s *Snapshot) {
			s.Events[1].Driver = "d-2"
		}, []string{InvOneDriverPerRide}, "p-1-1"},
		{"driver in two active rides", func(s *Snapshot) {
			s.Rides["p-1-1"] = RideState{Passenger: "p-1", Driver: "d-2", Status: "started"}
			s.Rides["p-9-1"] = RideState{Passenger: "p-9", Driver: "d-2", Status: "started"}
		}, []string{InvDriverOneRide}, "d-2"},
		{"on-ride driver whose ride is over", func(s *Snapshot) {
			s.Drivers["d-2"] = DriverState{Cell: "2-2", Status: "on_ride", Ride: "p-1-1"}
			s.Cells["2-2"] = CellState{}
		}, []string{InvDriverOneRide}, "d-2"},
		{"ride answered twice", func(s *Snapshot) {
			s.Answers = append(s.Answers, Answer{Passenger: "p-1", Outcome: Outcome{Ride: "p-1-1", Driver: "d-1"}})
		}, []string{InvOutcomeMatchesRide}, "p-1-1"},
		{"outcome disagrees with state", func(s *Snapshot) {
			s.Answers[1].Outcome = Outcome{Ride: "p-2-1", Driver: "d-2"}
		}, []string{InvOutcomeMatchesRide}, "p-2-1"},
		{"started ride never completed", func(s *Snapshot) {
			s.Events = s.Events[:1]
			s.Rides["p-1-1"] = RideState{Passenger: "p-1", Driver: "d-1", Status: "started"}
			s.Drivers["d-1"] = DriverState{Cell: "1-1", Status: "on_ride", Ride: "p-1-1"}
			s.Cells["1-1"] = CellState{}
			s.Passengers["p-1"] = PassengerState{Ride: "p-1-1"}
		}, []string{InvStartedCompleted, InvPassengerConsist}, "p-1-1"},
		{"duplicate ride-started record", func(s *Snapshot) {
			s.Events = append(s.Events, s.Events[0])
		}, []string{InvEventsOnce}, "p-1-1"},
		{"two ride-completed records", func(s *Snapshot) {
			s.Events = append(s.Events, s.Events[1])
		}, []string{InvEventsOnce, InvStartedCompleted}, "p-1-1"},
		{"free driver in no set", func(s *Snapshot) {
			delete(s.Cells, "2-2")
		}, []string{InvFreeSetIffFree}, "d-2"},
		{"free driver in two sets", func(s *Snapshot) {
			s.Cells["3-3"] = CellState{Free: []string{"d-2"}}
		}, []string{InvFreeSetIffFree}, "d-2"},
		{"on-ride driver in a set", func(s *Snapshot) {
			s.Drivers["d-2"] = DriverState{Cell: "2-2", Status: "on_ride", Ride: "p-5-1"}
			s.Rides["p-5-1"] = RideState{Passenger: "p-5", Driver: "d-2", Status: "started"}
		}, []string{InvFreeSetIffFree}, "d-2"},
		{"free in a set it did not join", func(s *Snapshot) {
			s.Drivers["d-2"] = DriverState{Cell: "2-2", Joined: "1-1", Status: "free"}
		}, []string{InvFreeSetIffFree}, "d-2"},
		{"passenger miscounts", func(s *Snapshot) {
			s.Passengers["p-1"] = PassengerState{Rides: 2}
		}, []string{InvPassengerConsist}, "p-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := goodSnapshot()
			c.break_(&s)
			rs := Check(s)
			got := failures(rs)
			for _, w := range c.want {
				r, ok := got[w]
				if !ok {
					t.Errorf("%s not reported; failures: %v", w, got)
					continue
				}
				if !strings.Contains(strings.Join(r.Examples, "\n"), c.id) {
					t.Errorf("%s examples %v do not name %s", w, r.Examples, c.id)
				}
				if !strings.Contains(InvariantsSummary(rs), w) {
					t.Errorf("summary %q does not name %s", InvariantsSummary(rs), w)
				}
			}
			if len(got) < len(c.want) {
				t.Errorf("want %d failing invariants, got %v", len(c.want), got)
			}
		})
	}
}

func TestCheckCapsExamples(t *testing.T) {
	s := goodSnapshot()
	for i := 0; i < 20; i++ {
		s.Events = append(s.Events, RideEvent{Kind: "bogus", Ride: "x"})
	}
	for _, r := range Check(s) {
		if r.Name == InvEventsOnce && (r.OK || len(r.Examples) != maxExamples || r.Failed < 20) {
			t.Fatalf("%+v", r)
		}
	}
}
