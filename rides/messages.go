package rides

import (
	"fmt"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/jsonstr"
)

// Namespace is the namespace of every RS-1 function type.
const Namespace = "rides"

// Function type names (the Type part of an address).
const (
	TypeDriver    = "driver"
	TypePassenger = "passenger"
	TypeGeocell   = "geocell"
	TypeRide      = "ride"
)

// Wire type names of the workload (fixed by workload-rides.md).
const (
	MsgLocation = "rides/location"
	MsgRequest  = "rides/request"
	MsgOutcome  = "rides/outcome"
	MsgEvent    = "rides/event"
	// MsgTouch is the memory scenario's cheap message to a passenger: body
	// {"cell":"x-y"}, it writes the passenger's "seen" state and nothing
	// else.
	MsgTouch = "rides/touch"
)

// Internal message type names. Their bodies are fields in the compact
// encoding of codec.go (uvarint length + bytes each), in the order listed.
const (
	msgJoin      = "rides/join"      // driver -> geocell: driver
	msgLeave     = "rides/leave"     // driver -> geocell: driver
	msgFind      = "rides/find"      // ride/geocell -> geocell: ride, origin cell, hop (uvarint)
	msgOffer     = "rides/offer"     // geocell -> driver: ride, cell
	msgAccept    = "rides/accept"    // driver -> ride: driver
	msgDecline   = "rides/decline"   // driver -> ride: driver
	msgNone      = "rides/none"      // geocell -> ride: (empty)
	msgInit      = "rides/init"      // passenger -> ride: passenger, cell, reply
	msgFinish    = "rides/finish"    // driver -> driver (delayed): ride
	msgCompleted = "rides/completed" // driver -> ride: driver; ride -> passenger: ride
	msgFailed    = "rides/failed"    // ride -> passenger: ride
)

// EgressName is the egress that rides write their events to.
const EgressName = "ride-events"

// Event kinds of the ride-events egress.
const (
	KindStarted   = "ride-started"
	KindCompleted = "ride-completed"
)

// Driver statuses and ride statuses as stored in state.
const (
	StatusFree      = "free"
	StatusOnRide    = "on_ride"
	StatusSearching = "searching"
	StatusStarted   = "started"
	StatusFailed    = "failed"
	StatusCompleted = "completed"
)

// DriverAddr, PassengerAddr, CellAddr and RideAddr build addresses.
func DriverAddr(id string) engine.Address {
	return engine.Address{Namespace: Namespace, Type: TypeDriver, ID: id}
}

// PassengerAddr is the address of passenger id.
func PassengerAddr(id string) engine.Address {
	return engine.Address{Namespace: Namespace, Type: TypePassenger, ID: id}
}

// CellAddr is the address of geocell id.
func CellAddr(id string) engine.Address {
	return engine.Address{Namespace: Namespace, Type: TypeGeocell, ID: id}
}

// RideAddr is the address of ride id.
func RideAddr(id string) engine.Address {
	return engine.Address{Namespace: Namespace, Type: TypeRide, ID: id}
}

// CellID returns the id of grid cell (x, y): "x-y".
func CellID(x, y int) string {
	b := make([]byte, 0, 8)
	b = appendInt(b, x)
	b = append(b, '-')
	return string(appendInt(b, y))
}

func appendInt(b []byte, v int) []byte {
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// AppendCellBody appends the body {"cell":"<cell>"} of rides/location,
// rides/request and rides/touch.
func AppendCellBody(dst []byte, cell string) []byte {
	dst = append(dst, `{"cell":`...)
	dst = jsonstr.Append(dst, cell)
	return append(dst, '}')
}

// LocationMessage builds a rides/location message.
func LocationMessage(cell string) engine.Message {
	return engine.Message{Type: MsgLocation, Value: AppendCellBody(make([]byte, 0, 12+len(cell)), cell)}
}

// RequestMessage builds a rides/request message.
func RequestMessage(cell string) engine.Message {
	return engine.Message{Type: MsgRequest, Value: AppendCellBody(make([]byte, 0, 12+len(cell)), cell)}
}

// TouchMessage builds a rides/touch message.
func TouchMessage(cell string) engine.Message {
	return engine.Message{Type: MsgTouch, Value: AppendCellBody(make([]byte, 0, 12+len(cell)), cell)}
}

// DecodeCellBody decodes {"cell":"x-y"}: the cell must be a non-empty
// string of at most MaxCellBytes, given once; other members are ignored.
func DecodeCellBody(b []byte) (string, error) {
	var cell []byte
	found, dup, isStr := false, false, false
	err := jsonFields(b, func(k string, v []byte, str bool) {
		if k == "cell" {
			dup = dup || found
			cell, found, isStr = v, true, str
		}
	})
	switch {
	case err != nil:
		return "", err
	case dup:
		return "", fmt.Errorf("%w: \"cell\" is given twice", ErrBadBody)
	case !found || len(cell) == 0 || !isStr:
		return "", fmt.Errorf("%w: want a non-empty string \"cell\", e.g. {\"cell\":\"12-40\"}", ErrBadBody)
	case len(cell) > MaxCellBytes:
		return "", fmt.Errorf("%w: \"cell\" is %d bytes long; at most %d are allowed", ErrBadBody, len(cell), MaxCellBytes)
	}
	return string(cell), nil
}

// jsonMembers decodes a flat JSON object whose members are all optional
// and named in want (a string kind "s" or a boolean kind "b"); a member
// of the wrong kind, given twice or too long is an error; unknown members
// are ignored.
func jsonMembers(what string, b []byte, want map[string]byte, set func(k string, v []byte)) error {
	var seen [8]string
	n := 0
	var bad error
	err := jsonFields(b, func(k string, v []byte, str bool) {
		kind, ok := want[k]
		if !ok || bad != nil {
			return
		}
		for _, s := range seen[:n] {
			if s == k {
				bad = fmt.Errorf("%w: %s: %q is given twice", ErrBadBody, what, k)
				return
			}
		}
		if n < len(seen) {
			seen[n] = k
			n++
		}
		switch {
		case kind == 's' && !str:
			bad = fmt.Errorf("%w: %s: %q must be a string", ErrBadBody, what, k)
		case kind == 's' && len(v) > MaxIDBytes:
			bad = fmt.Errorf("%w: %s: %q is %d bytes long; at most %d are allowed", ErrBadBody, what, k, len(v), MaxIDBytes)
		case kind == 'b' && (str || (string(v) != "true" && string(v) != "false")):
			bad = fmt.Errorf("%w: %s: %q must be true or false", ErrBadBody, what, k)
		default:
			set(k, v)
		}
	})
	if err != nil {
		return err
	}
	return bad
}

// Outcome is the reply to a rides/request: the ride and its driver, or
// Failed. A refused request (the passenger already had an active ride) is
// Failed with an empty Ride.
type Outcome struct {
	Ride   string
	Driver string
	Failed bool
}

// AppendOutcome appends the JSON body of o:
// {"ride":"<id>","driver":"d-17"} or {"ride":"<id>","failed":true}.
func AppendOutcome(dst []byte, o Outcome) []byte {
	dst = append(dst, `{"ride":`...)
	dst = jsonstr.Append(dst, o.Ride)
	if o.Driver != "" {
		dst = append(dst, `,"driver":`...)
		dst = jsonstr.Append(dst, o.Driver)
	}
	if o.Failed {
		dst = append(dst, `,"failed":true`...)
	}
	return append(dst, '}')
}

// DecodeOutcome decodes a rides/outcome body.
func DecodeOutcome(b []byte) (Outcome, error) {
	var o Outcome
	err := jsonMembers(MsgOutcome, b, outcomeMembers, func(k string, v []byte) {
		switch k {
		case "ride":
			o.Ride = string(v)
		case "driver":
			o.Driver = string(v)
		case "failed":
			o.Failed = string(v) == "true"
		}
	})
	if err != nil {
		return Outcome{}, err
	}
	if !o.Failed && (o.Ride == "" || o.Driver == "") {
		return Outcome{}, fmt.Errorf("%w: outcome without ride/driver and not failed", ErrBadBody)
	}
	return o, nil
}

var (
	outcomeMembers = map[string]byte{"ride": 's', "driver": 's', "failed": 'b'}
	eventMembers   = map[string]byte{"kind": 's', "ride": 's', "driver": 's', "passenger": 's'}
)

// Event is one record of the ride-events egress.
type Event struct {
	Kind      string
	Ride      string
	Driver    string
	Passenger string
}

// AppendEvent appends the JSON body of e:
// {"kind":"ride-started","ride":"<id>","driver":"d-17","passenger":"p-9"}.
func AppendEvent(dst []byte, e Event) []byte {
	dst = append(dst, `{"kind":`...)
	dst = jsonstr.Append(dst, e.Kind)
	dst = append(dst, `,"ride":`...)
	dst = jsonstr.Append(dst, e.Ride)
	dst = append(dst, `,"driver":`...)
	dst = jsonstr.Append(dst, e.Driver)
	dst = append(dst, `,"passenger":`...)
	dst = jsonstr.Append(dst, e.Passenger)
	return append(dst, '}')
}

// DecodeEvent decodes a rides/event body; the kind must be ride-started or
// ride-completed and the ride must be given.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	err := jsonMembers(MsgEvent, b, eventMembers, func(k string, v []byte) {
		switch k {
		case "kind":
			e.Kind = string(v)
		case "ride":
			e.Ride = string(v)
		case "driver":
			e.Driver = string(v)
		case "passenger":
			e.Passenger = string(v)
		}
	})
	if err != nil {
		return Event{}, err
	}
	if e.Ride == "" {
		return Event{}, fmt.Errorf("%w: event without ride", ErrBadBody)
	}
	if e.Kind != KindStarted && e.Kind != KindCompleted {
		return Event{}, fmt.Errorf("%w: event kind %q; want %s or %s", ErrBadBody, e.Kind, KindStarted, KindCompleted)
	}
	return e, nil
}
