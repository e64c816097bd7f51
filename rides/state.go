package rides

import (
	"encoding/binary"
	"fmt"

	"github.com/shardfn/shardfn/engine"
)

// setFind returns the byte range [start, end) of id's entry in a free set.
func setFind(set, id []byte) (start, end int, found bool, err error) {
	i := 0
	for i < len(set) {
		l, n := binary.Uvarint(set[i:])
		if n <= 0 || uint64(len(set)-i-n) < l {
			return 0, 0, false, fmt.Errorf("%w: corrupt free set", ErrBadBody)
		}
		e := i + n + int(l)
		if string(set[i+n:e]) == string(id) {
			return i, e, true, nil
		}
		i = e
	}
	return 0, 0, false, nil
}

// setLast returns the start of the last entry of a non-empty free set and
// its id.
func setLast(set []byte) (start int, id []byte, err error) {
	i := 0
	for i < len(set) {
		l, n := binary.Uvarint(set[i:])
		if n <= 0 || uint64(len(set)-i-n) < l {
			return 0, nil, fmt.Errorf("%w: corrupt free set", ErrBadBody)
		}
		start, id = i, set[i+n:i+n+int(l)]
		i += n + int(l)
	}
	return start, id, nil
}

// DecodeSet decodes a free set (state type TypeSet).
func DecodeSet(set []byte) ([]string, error) {
	var out []string
	r := fieldReader{typ: TypeSet, b: set}
	for len(r.b) > 0 && r.err == nil {
		out = append(out, string(r.field("driver", MaxIDBytes, false)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// EncodeSet encodes ids as a free set (for tests and tools).
func EncodeSet(ids ...string) []byte { return fields(ids...) }

// DriverState is a driver's state as read from the engine.
type DriverState struct{ Cell, Joined, Status, Ride string }

// PassengerState is a passenger's state.
type PassengerState struct {
	Ride  string
	Rides int64
	Seq   int64
	Seen  string
}

// CellState is a geocell's state.
type CellState struct{ Free []string }

// RideState is a ride's state.
type RideState struct {
	Passenger, Driver, Cell, Status, Reply string
	Tries                                  int64
}

func forEach(vs []engine.StateValue, fn func(name string, v []byte) error) error {
	for _, v := range vs {
		if !v.Present {
			continue
		}
		if err := fn(v.Spec.Name, v.Value); err != nil {
			return fmt.Errorf("state %q: %w", v.Spec.Name, err)
		}
	}
	return nil
}

func long(b []byte) (int64, error) { return engine.DecodeLongWrapper(b) }

// DecodeDriver decodes the output of engine.State for a rides/driver.
func DecodeDriver(vs []engine.StateValue) (DriverState, error) {
	var s DriverState
	err := forEach(vs, func(n string, v []byte) error {
		switch n {
		case "cell":
			s.Cell = string(v)
		case "joined":
			s.Joined = string(v)
		case "status":
			s.Status = string(v)
		case "ride":
			s.Ride = string(v)
		}
		return nil
	})
	return s, err
}

// DecodePassenger decodes the output of engine.State for a rides/passenger.
func DecodePassenger(vs []engine.StateValue) (PassengerState, error) {
	var s PassengerState
	err := forEach(vs, func(n string, v []byte) (err error) {
		switch n {
		case "ride":
			s.Ride = string(v)
		case "rides":
			s.Rides, err = long(v)
		case "seq":
			s.Seq, err = long(v)
		case "seen":
			s.Seen = string(v)
		}
		return err
	})
	return s, err
}

// DecodeCell decodes the output of engine.State for a rides/geocell.
func DecodeCell(vs []engine.StateValue) (CellState, error) {
	var s CellState
	for _, v := range vs {
		switch {
		case v.Spec.Name != "free":
		case v.Spec.Type == engine.TypeMap: // these functions' geocell
			if v.MapLen > len(v.Map) {
				return s, fmt.Errorf("state \"free\": %d entries, of which the read shows only %d", v.MapLen, len(v.Map))
			}
			for _, en := range v.Map {
				s.Free = append(s.Free, en.Key)
			}
		case v.Present: // a geocell that keeps the set as one value (rides.js)
			free, err := DecodeSet(v.Value)
			if err != nil {
				return s, fmt.Errorf("state \"free\": %w", err)
			}
			s.Free = free
		}
	}
	return s, nil
}

// DecodeRide decodes the output of engine.State for a rides/ride.
func DecodeRide(vs []engine.StateValue) (RideState, error) {
	var s RideState
	err := forEach(vs, func(n string, v []byte) (err error) {
		switch n {
		case "passenger":
			s.Passenger = string(v)
		case "driver":
			s.Driver = string(v)
		case "cell":
			s.Cell = string(v)
		case "status":
			s.Status = string(v)
		case "reply":
			s.Reply = string(v)
		case "tries":
			s.Tries, err = long(v)
		}
		return err
	})
	return s, err
}
