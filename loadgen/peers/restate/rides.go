package main

import (
	"fmt"
	"strconv"
	"time"

	restate "github.com/restatedev/sdk-go"
)

// Service (virtual object) names, as they appear in ingress URLs:
// POST /<Object>/<key>/<handler>.
const (
	objDriver    = "Driver"
	objPassenger = "Passenger"
	objCell      = "GeoCell"
	objRide      = "Ride"
	objEvents    = "Events"
)

// EventsKey is the key of the one Events object that holds the ride-events
// log.
const EventsKey = "ride-events"

// Event kinds and statuses, spelled as in workload-rides.md.
const (
	kindStarted   = "ride-started"
	kindCompleted = "ride-completed"

	statusFree      = "free"
	statusOnRide    = "on_ride"
	statusSearching = "searching"
	statusStarted   = "started"
	statusFailed    = "failed"
	statusCompleted = "completed"
)

// State keys. Each field of the workload's state is its own Restate state
// entry, so a handler writes only what it changes.
const (
	stCell      = "cell"
	stJoined    = "joined"
	stStatus    = "status"
	stRide      = "ride"
	stRides     = "rides"
	stSeq       = "seq"
	stFree      = "free"
	stPassenger = "passenger"
	stDriver    = "driver"
	stReply     = "reply"
	stTries     = "tries"
	stCount     = "n"
)

// Wire bodies. CellBody is rides/location and rides/request; Outcome is
// rides/outcome; Event is rides/event.
type (
	CellBody struct {
		Cell string `json:"cell"`
	}
	Outcome struct {
		Ride   string `json:"ride"`
		Driver string `json:"driver,omitempty"`
		Failed bool   `json:"failed,omitempty"`
	}
	Event struct {
		Kind      string `json:"kind"`
		Ride      string `json:"ride"`
		Driver    string `json:"driver"`
		Passenger string `json:"passenger"`
	}
)

// Internal messages between the objects.
type (
	startMsg struct {
		Cell  string `json:"cell"`
		Reply string `json:"reply"` // awakeable id of the waiting request
	}
	initMsg struct {
		Passenger string `json:"passenger"`
		Cell      string `json:"cell"`
		Reply     string `json:"reply"`
	}
	driverMsg struct {
		Driver string `json:"driver"`
	}
	rideMsg struct {
		Ride string `json:"ride"`
	}
	findMsg struct {
		Ride   string `json:"ride"`
		Origin string `json:"origin"`
		Hop    int    `json:"hop"`
	}
	offerMsg struct {
		Ride string `json:"ride"`
		Cell string `json:"cell"`
	}
)

// State views returned by the read-only shared "get" handlers.
type (
	DriverView struct {
		Cell   string `json:"cell"`
		Joined string `json:"joined"`
		Status string `json:"status"`
		Ride   string `json:"ride"`
	}
	PassengerView struct {
		Ride  string `json:"ride"`
		Rides int64  `json:"rides"`
	}
	RideView struct {
		Passenger string `json:"passenger"`
		Driver    string `json:"driver"`
		Cell      string `json:"cell"`
		Status    string `json:"status"`
	}
	CellView struct {
		Free []string `json:"free"`
	}
)

// Config holds the workload parameters the functions need.
type Config struct {
	FinishDelay  time.Duration // mean delay of finish; default 2s
	FinishJitter float64       // finish delay spread, fraction of FinishDelay; default 0.25
	MaxRetries   int           // asks again after a decline; default 3
	Grid         int           // side of the grid; default 100
	EventsBucket int           // records per state entry of the events log; default 64
}

// finishDelay is the jittered delay of ride's finish: deterministic in the
// ride id so a replayed invocation schedules the same timer.
func (c Config) finishDelay(ride string) time.Duration {
	if c.FinishJitter == 0 {
		return c.FinishDelay
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(ride); i++ {
		h ^= uint64(ride[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	u := float64(h>>11) / float64(1<<53)
	return time.Duration(float64(c.FinishDelay) * (1 - c.FinishJitter + 2*c.FinishJitter*u))
}

var neighbourOffsets = [8][2]int{{-1, -1}, {0, -1}, {1, -1}, {-1, 0}, {1, 0}, {-1, 1}, {0, 1}, {1, 1}}

// neighbour is the hop-th cell of the search around origin (hop 0 is origin,
// 1..8 the ring in a fixed order); ok is false off the grid.
func (c Config) neighbour(origin string, hop int) (string, bool) {
	if hop == 0 {
		return origin, true
	}
	x, y, ok := parseCell(origin)
	if !ok || hop < 1 || hop > 8 {
		return "", false
	}
	d := neighbourOffsets[hop-1]
	nx, ny := x+d[0], y+d[1]
	if nx < 0 || ny < 0 || nx >= c.Grid || ny >= c.Grid {
		return "", false
	}
	return strconv.Itoa(nx) + "-" + strconv.Itoa(ny), true
}

func parseCell(s string) (x, y int, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			a, err1 := strconv.Atoi(s[:i])
			b, err2 := strconv.Atoi(s[i+1:])
			return a, b, err1 == nil && err2 == nil && a >= 0 && b >= 0
		}
	}
	return 0, 0, false
}

// get reads a state entry, treating absence as the zero value.
func get[T any](ctx restate.ObjectSharedContext, key string) (T, error) {
	v, err := restate.Get[T](ctx, key)
	return v, err
}

// getStrings reads the string state entries keys, in order (each read is a
// journal entry, so the order is kept as written).
func getStrings(ctx restate.ObjectSharedContext, keys ...string) ([]string, error) {
	out := make([]string, len(keys))
	for i, k := range keys {
		v, err := get[string](ctx, k)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// rides holds the handlers of the four RS-1 objects and the events log.
type rides struct{ cfg Config }

// definitions returns the service definitions to bind.
func (r *rides) definitions() []restate.ServiceDefinition {
	return []restate.ServiceDefinition{
		restate.NewObject(objDriver).
			Handler("location", restate.NewObjectHandler(r.driverLocation)).
			Handler("offer", restate.NewObjectHandler(r.driverOffer)).
			Handler("finish", restate.NewObjectHandler(r.driverFinish)).
			Handler("get", restate.NewObjectSharedHandler(r.driverGet)),
		restate.NewObject(objPassenger).
			Handler("request", restate.NewObjectSharedHandler(r.passengerRequest)).
			Handler("start", restate.NewObjectHandler(r.passengerStart)).
			Handler("failed", restate.NewObjectHandler(r.passengerFailed)).
			Handler("completed", restate.NewObjectHandler(r.passengerCompleted)).
			Handler("get", restate.NewObjectSharedHandler(r.passengerGet)),
		restate.NewObject(objCell).
			Handler("join", restate.NewObjectHandler(r.cellJoin)).
			Handler("leave", restate.NewObjectHandler(r.cellLeave)).
			Handler("find", restate.NewObjectHandler(r.cellFind)).
			Handler("get", restate.NewObjectSharedHandler(r.cellGet)),
		restate.NewObject(objRide).
			Handler("init", restate.NewObjectHandler(r.rideInit)).
			Handler("accept", restate.NewObjectHandler(r.rideAccept)).
			Handler("decline", restate.NewObjectHandler(r.rideDecline)).
			Handler("none", restate.NewObjectHandler(r.rideNone)).
			Handler("completed", restate.NewObjectHandler(r.rideCompleted)).
			Handler("get", restate.NewObjectSharedHandler(r.rideGet)),
		restate.NewObject(objEvents, restate.WithEnableLazyState(true)).
			Handler("append", restate.NewObjectHandler(r.eventsAppend)).
			Handler("get", restate.NewObjectSharedHandler(r.eventsGet)),
	}
}

func (c *Config) validate() error {
	switch {
	case c.FinishDelay <= 0:
		return fmt.Errorf("finish delay %v must be positive", c.FinishDelay)
	case c.FinishJitter < 0 || c.FinishJitter > 0.95:
		return fmt.Errorf("finish jitter %v out of range [0, 0.95]", c.FinishJitter)
	case c.MaxRetries < 0:
		return fmt.Errorf("max retries %d must not be negative", c.MaxRetries)
	case c.Grid < 1:
		return fmt.Errorf("grid %d must be positive", c.Grid)
	case c.EventsBucket < 1:
		return fmt.Errorf("events bucket %d must be positive", c.EventsBucket)
	}
	return nil
}
