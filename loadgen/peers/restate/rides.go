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

// rides holds the handlers of the four RS-1 objects and the events log.
type rides struct{ cfg Config }

// ---- Driver ----

func (r *rides) driverLocation(ctx restate.ObjectContext, in CellBody) (restate.Void, error) {
	if in.Cell == "" {
		return restate.Void{}, restate.TerminalErrorf("location: missing cell")
	}
	me := restate.Key(ctx)
	restate.Set(ctx, stCell, in.Cell)
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != "" && status != statusFree {
		return restate.Void{}, nil
	}
	joined, err := get[string](ctx, stJoined)
	if err != nil {
		return restate.Void{}, err
	}
	if status == "" {
		restate.Set(ctx, stStatus, statusFree)
	}
	if joined == in.Cell {
		return restate.Void{}, nil
	}
	if joined != "" {
		restate.ObjectSend(ctx, objCell, joined, "leave").Send(driverMsg{Driver: me})
	}
	restate.ObjectSend(ctx, objCell, in.Cell, "join").Send(driverMsg{Driver: me})
	restate.Set(ctx, stJoined, in.Cell)
	return restate.Void{}, nil
}

func (r *rides) driverOffer(ctx restate.ObjectContext, in offerMsg) (restate.Void, error) {
	me := restate.Key(ctx)
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusFree {
		restate.ObjectSend(ctx, objRide, in.Ride, "decline").Send(driverMsg{Driver: me})
		return restate.Void{}, nil
	}
	joined, err := get[string](ctx, stJoined)
	if err != nil {
		return restate.Void{}, err
	}
	// Leave the joined cell even when it is the offering one: that cell may
	// have seen this driver leave and join again while the offer was in
	// flight (same rule as the engine's rides package).
	if joined != "" {
		restate.ObjectSend(ctx, objCell, joined, "leave").Send(driverMsg{Driver: me})
		restate.Set(ctx, stJoined, "")
	}
	restate.Set(ctx, stStatus, statusOnRide)
	restate.Set(ctx, stRide, in.Ride)
	restate.ObjectSend(ctx, objRide, in.Ride, "accept").Send(driverMsg{Driver: me})
	restate.ObjectSend(ctx, objDriver, me, "finish").Send(rideMsg{Ride: in.Ride}, restate.WithDelay(r.cfg.finishDelay(in.Ride)))
	return restate.Void{}, nil
}

func (r *rides) driverFinish(ctx restate.ObjectContext, in rideMsg) (restate.Void, error) {
	me := restate.Key(ctx)
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	ride, err := get[string](ctx, stRide)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusOnRide || ride != in.Ride {
		return restate.Void{}, nil
	}
	cell, err := get[string](ctx, stCell)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stStatus, statusFree)
	restate.Set(ctx, stRide, "")
	if cell != "" {
		restate.ObjectSend(ctx, objCell, cell, "join").Send(driverMsg{Driver: me})
		restate.Set(ctx, stJoined, cell)
	}
	restate.ObjectSend(ctx, objRide, in.Ride, "completed").Send(driverMsg{Driver: me})
	return restate.Void{}, nil
}

func (r *rides) driverGet(ctx restate.ObjectSharedContext, _ restate.Void) (DriverView, error) {
	var v DriverView
	var err error
	if v.Cell, err = get[string](ctx, stCell); err != nil {
		return v, err
	}
	if v.Joined, err = get[string](ctx, stJoined); err != nil {
		return v, err
	}
	if v.Status, err = get[string](ctx, stStatus); err != nil {
		return v, err
	}
	v.Ride, err = get[string](ctx, stRide)
	return v, err
}

// ---- Passenger ----

// passengerRequest is the request-response entry point. It is a shared
// handler: it does not take the passenger's lock, so the passenger keeps
// processing start/failed/completed while this invocation waits. It makes
// an awakeable, hands its id to the exclusive start handler (one-way), and
// returns whatever the ride (or start, on refusal) resolves it with.
func (r *rides) passengerRequest(ctx restate.ObjectSharedContext, in CellBody) (Outcome, error) {
	if in.Cell == "" {
		return Outcome{}, restate.TerminalErrorf("request: missing cell")
	}
	awk := restate.Awakeable[Outcome](ctx)
	restate.ObjectSend(ctx, objPassenger, restate.Key(ctx), "start").Send(startMsg{Cell: in.Cell, Reply: awk.Id()})
	return awk.Result()
}

func (r *rides) passengerStart(ctx restate.ObjectContext, in startMsg) (restate.Void, error) {
	me := restate.Key(ctx)
	ride, err := get[string](ctx, stRide)
	if err != nil {
		return restate.Void{}, err
	}
	if ride != "" {
		// Refused: an active ride exists; no ride is made.
		restate.ResolveAwakeable(ctx, in.Reply, Outcome{Failed: true})
		return restate.Void{}, nil
	}
	seq, err := get[int64](ctx, stSeq)
	if err != nil {
		return restate.Void{}, err
	}
	seq++
	ride = me + "." + strconv.FormatInt(seq, 10)
	restate.Set(ctx, stSeq, seq)
	restate.Set(ctx, stRide, ride)
	restate.ObjectSend(ctx, objRide, ride, "init").Send(initMsg{Passenger: me, Cell: in.Cell, Reply: in.Reply})
	return restate.Void{}, nil
}

func (r *rides) passengerFailed(ctx restate.ObjectContext, in rideMsg) (restate.Void, error) {
	ride, err := get[string](ctx, stRide)
	if err != nil {
		return restate.Void{}, err
	}
	if ride == in.Ride {
		restate.Set(ctx, stRide, "")
	}
	return restate.Void{}, nil
}

func (r *rides) passengerCompleted(ctx restate.ObjectContext, in rideMsg) (restate.Void, error) {
	ride, err := get[string](ctx, stRide)
	if err != nil {
		return restate.Void{}, err
	}
	if ride != in.Ride {
		return restate.Void{}, nil
	}
	n, err := get[int64](ctx, stRides)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stRide, "")
	restate.Set(ctx, stRides, n+1)
	return restate.Void{}, nil
}

func (r *rides) passengerGet(ctx restate.ObjectSharedContext, _ restate.Void) (PassengerView, error) {
	var v PassengerView
	var err error
	if v.Ride, err = get[string](ctx, stRide); err != nil {
		return v, err
	}
	v.Rides, err = get[int64](ctx, stRides)
	return v, err
}

// ---- GeoCell ----

func (r *rides) cellJoin(ctx restate.ObjectContext, in driverMsg) (restate.Void, error) {
	free, err := get[[]string](ctx, stFree)
	if err != nil {
		return restate.Void{}, err
	}
	for _, d := range free {
		if d == in.Driver {
			return restate.Void{}, nil
		}
	}
	restate.Set(ctx, stFree, append(free, in.Driver))
	return restate.Void{}, nil
}

func (r *rides) cellLeave(ctx restate.ObjectContext, in driverMsg) (restate.Void, error) {
	free, err := get[[]string](ctx, stFree)
	if err != nil {
		return restate.Void{}, err
	}
	for i, d := range free {
		if d == in.Driver {
			free[i] = free[len(free)-1]
			free = free[:len(free)-1]
			if len(free) == 0 {
				restate.Clear(ctx, stFree)
			} else {
				restate.Set(ctx, stFree, free)
			}
			break
		}
	}
	return restate.Void{}, nil
}

// cellFind takes one free driver and offers it the ride; with none free it
// forwards the search to the next neighbour of the origin cell, and after
// the last one answers none to the ride.
func (r *rides) cellFind(ctx restate.ObjectContext, in findMsg) (restate.Void, error) {
	free, err := get[[]string](ctx, stFree)
	if err != nil {
		return restate.Void{}, err
	}
	if n := len(free); n > 0 {
		d := free[n-1]
		if n == 1 {
			restate.Clear(ctx, stFree)
		} else {
			restate.Set(ctx, stFree, free[:n-1])
		}
		restate.ObjectSend(ctx, objDriver, d, "offer").Send(offerMsg{Ride: in.Ride, Cell: restate.Key(ctx)})
		return restate.Void{}, nil
	}
	for hop := in.Hop + 1; hop <= 8; hop++ {
		if next, ok := r.cfg.neighbour(in.Origin, hop); ok {
			restate.ObjectSend(ctx, objCell, next, "find").Send(findMsg{Ride: in.Ride, Origin: in.Origin, Hop: hop})
			return restate.Void{}, nil
		}
	}
	restate.ObjectSend(ctx, objRide, in.Ride, "none").Send(restate.Void{})
	return restate.Void{}, nil
}

func (r *rides) cellGet(ctx restate.ObjectSharedContext, _ restate.Void) (CellView, error) {
	free, err := get[[]string](ctx, stFree)
	if free == nil {
		free = []string{}
	}
	return CellView{Free: free}, err
}

// ---- Ride ----

func (r *rides) rideInit(ctx restate.ObjectContext, in initMsg) (restate.Void, error) {
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != "" {
		return restate.Void{}, nil // ride ids are unique; a second init is ignored
	}
	restate.Set(ctx, stPassenger, in.Passenger)
	restate.Set(ctx, stCell, in.Cell)
	restate.Set(ctx, stReply, in.Reply)
	restate.Set(ctx, stStatus, statusSearching)
	restate.ObjectSend(ctx, objCell, in.Cell, "find").Send(findMsg{Ride: restate.Key(ctx), Origin: in.Cell})
	return restate.Void{}, nil
}

func (r *rides) rideAccept(ctx restate.ObjectContext, in driverMsg) (restate.Void, error) {
	me := restate.Key(ctx)
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusSearching {
		return restate.Void{}, restate.TerminalErrorf("ride %s: accept from %s in status %q", me, in.Driver, status)
	}
	reply, err := get[string](ctx, stReply)
	if err != nil {
		return restate.Void{}, err
	}
	passenger, err := get[string](ctx, stPassenger)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stStatus, statusStarted)
	restate.Set(ctx, stDriver, in.Driver)
	restate.ResolveAwakeable(ctx, reply, Outcome{Ride: me, Driver: in.Driver})
	restate.ObjectSend(ctx, objEvents, EventsKey, "append").Send(Event{Kind: kindStarted, Ride: me, Driver: in.Driver, Passenger: passenger})
	return restate.Void{}, nil
}

func (r *rides) rideDecline(ctx restate.ObjectContext, in driverMsg) (restate.Void, error) {
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusSearching {
		return restate.Void{}, nil
	}
	tries, err := get[int](ctx, stTries)
	if err != nil {
		return restate.Void{}, err
	}
	if tries >= r.cfg.MaxRetries {
		return r.rideFail(ctx)
	}
	cell, err := get[string](ctx, stCell)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stTries, tries+1)
	restate.ObjectSend(ctx, objCell, cell, "find").Send(findMsg{Ride: restate.Key(ctx), Origin: cell})
	return restate.Void{}, nil
}

func (r *rides) rideNone(ctx restate.ObjectContext, _ restate.Void) (restate.Void, error) {
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusSearching {
		return restate.Void{}, nil
	}
	return r.rideFail(ctx)
}

func (r *rides) rideFail(ctx restate.ObjectContext) (restate.Void, error) {
	me := restate.Key(ctx)
	reply, err := get[string](ctx, stReply)
	if err != nil {
		return restate.Void{}, err
	}
	passenger, err := get[string](ctx, stPassenger)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stStatus, statusFailed)
	restate.ResolveAwakeable(ctx, reply, Outcome{Ride: me, Failed: true})
	restate.ObjectSend(ctx, objPassenger, passenger, "failed").Send(rideMsg{Ride: me})
	return restate.Void{}, nil
}

func (r *rides) rideCompleted(ctx restate.ObjectContext, in driverMsg) (restate.Void, error) {
	me := restate.Key(ctx)
	status, err := get[string](ctx, stStatus)
	if err != nil {
		return restate.Void{}, err
	}
	if status != statusStarted {
		return restate.Void{}, nil
	}
	passenger, err := get[string](ctx, stPassenger)
	if err != nil {
		return restate.Void{}, err
	}
	restate.Set(ctx, stStatus, statusCompleted)
	restate.ObjectSend(ctx, objPassenger, passenger, "completed").Send(rideMsg{Ride: me})
	restate.ObjectSend(ctx, objEvents, EventsKey, "append").Send(Event{Kind: kindCompleted, Ride: me, Driver: in.Driver, Passenger: passenger})
	return restate.Void{}, nil
}

func (r *rides) rideGet(ctx restate.ObjectSharedContext, _ restate.Void) (RideView, error) {
	var v RideView
	var err error
	if v.Passenger, err = get[string](ctx, stPassenger); err != nil {
		return v, err
	}
	if v.Driver, err = get[string](ctx, stDriver); err != nil {
		return v, err
	}
	if v.Cell, err = get[string](ctx, stCell); err != nil {
		return v, err
	}
	v.Status, err = get[string](ctx, stStatus)
	return v, err
}

// ---- Events: the ride-events log ----
//
// Restate has no egress log, so the log is the state of one virtual object:
// a count "n" and buckets "b<k>" of EventsBucket records each, so an append
// rewrites one bucket, not the whole log. The object uses lazy state so an
// append does not ship the whole log to the service.

func bucketKey(k int64) string { return "b" + strconv.FormatInt(k, 10) }

func (r *rides) eventsAppend(ctx restate.ObjectContext, in Event) (restate.Void, error) {
	n, err := get[int64](ctx, stCount)
	if err != nil {
		return restate.Void{}, err
	}
	size := int64(r.cfg.EventsBucket)
	key := bucketKey(n / size)
	var b []Event
	if n%size != 0 {
		if b, err = get[[]Event](ctx, key); err != nil {
			return restate.Void{}, err
		}
	}
	restate.Set(ctx, key, append(b, in))
	restate.Set(ctx, stCount, n+1)
	return restate.Void{}, nil
}

func (r *rides) eventsGet(ctx restate.ObjectSharedContext, _ restate.Void) ([]Event, error) {
	n, err := get[int64](ctx, stCount)
	if err != nil {
		return nil, err
	}
	size := int64(r.cfg.EventsBucket)
	out := make([]Event, 0, n)
	for k := int64(0); k*size < n; k++ {
		b, err := get[[]Event](ctx, bucketKey(k))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	// A shared handler runs beside appends and lazy state is read live, so
	// the last bucket may already hold records appended after n was read;
	// buckets only grow, so the first n records are the log as of n.
	if int64(len(out)) < n {
		return nil, restate.TerminalErrorf("events: count %d but only %d records stored", n, len(out))
	}
	return out[:n], nil
}

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
