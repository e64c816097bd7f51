package rides

import (
	"fmt"
	"strconv"

	"github.com/shardfn/shardfn/engine"
)

// TypeSet is the encoding of a set of driver ids as DecodeSet reads it:
// each uvarint(len) bytes. (A geocell keeps its free set as map state,
// entry by entry, so that a join or leave costs one entry, not the set.)
const TypeSet = "rides/set"

// State specs, by function type. Strings are raw bytes (engine.TypeBytes);
// counters are engine.TypeLong.
var (
	driverCell   = engine.ValueSpec{Name: "cell", Type: engine.TypeBytes}
	driverJoined = engine.ValueSpec{Name: "joined", Type: engine.TypeBytes}
	driverStatus = engine.ValueSpec{Name: "status", Type: engine.TypeBytes}
	driverRide   = engine.ValueSpec{Name: "ride", Type: engine.TypeBytes}

	passengerRide  = engine.ValueSpec{Name: "ride", Type: engine.TypeBytes}
	passengerRides = engine.ValueSpec{Name: "rides", Type: engine.TypeLong}
	passengerSeq   = engine.ValueSpec{Name: "seq", Type: engine.TypeLong}
	passengerSeen  = engine.ValueSpec{Name: "seen", Type: engine.TypeBytes}

	cellFree = engine.MapSpec{Name: "free"} // driver id -> nothing

	ridePassenger = engine.ValueSpec{Name: "passenger", Type: engine.TypeBytes}
	rideDriver    = engine.ValueSpec{Name: "driver", Type: engine.TypeBytes}
	rideCell      = engine.ValueSpec{Name: "cell", Type: engine.TypeBytes}
	rideStatus    = engine.ValueSpec{Name: "status", Type: engine.TypeBytes}
	rideReply     = engine.ValueSpec{Name: "reply", Type: engine.TypeBytes}
	rideTries     = engine.ValueSpec{Name: "tries", Type: engine.TypeLong}
)

// Specs returns the four RS-1 function types with the default Config.
func Specs() []engine.FunctionSpec {
	s, err := NewSpecs(DefaultConfig())
	if err != nil {
		panic(err) // the defaults are valid
	}
	return s
}

// NewSpecs returns the four RS-1 function types with cfg (defaults filled
// in), or an error if cfg is invalid.
func NewSpecs(cfg Config) ([]engine.FunctionSpec, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &funcs{cfg: cfg}
	return []engine.FunctionSpec{
		{Namespace: Namespace, Type: TypeDriver, States: []engine.ValueSpec{driverCell, driverJoined, driverStatus, driverRide},
			Function: engine.FunctionFunc(f.driver), IngressTypes: []string{MsgLocation}},
		{Namespace: Namespace, Type: TypePassenger, States: []engine.ValueSpec{passengerRide, passengerRides, passengerSeq, passengerSeen},
			Function: engine.FunctionFunc(f.passenger), IngressTypes: []string{MsgRequest, MsgTouch}},
		// Geocells and rides are driven by the other functions only: their
		// internal messages (rides/join, rides/find, rides/init, ...) are
		// refused from ingress.
		{Namespace: Namespace, Type: TypeGeocell, Maps: []engine.MapSpec{cellFree},
			Function: engine.FunctionFunc(f.geocell), NoIngress: true},
		{Namespace: Namespace, Type: TypeRide, States: []engine.ValueSpec{ridePassenger, rideDriver, rideCell, rideStatus, rideReply, rideTries},
			Function: engine.FunctionFunc(f.ride), NoIngress: true},
	}, nil
}

type funcs struct{ cfg Config }

func fields(vs ...string) []byte {
	n := 0
	for _, v := range vs {
		n += len(v) + 2
	}
	b := make([]byte, 0, n)
	for _, v := range vs {
		b = appendField(b, v)
	}
	return b
}

func msgOf(typ string, vs ...string) engine.Message {
	return engine.Message{Type: typ, Value: fields(vs...)}
}

func setStr(ctx engine.Context, spec engine.ValueSpec, v string) error {
	if v == "" {
		return ctx.Remove(spec)
	}
	return ctx.Set(spec, []byte(v))
}

func getInt(ctx engine.Context, spec engine.ValueSpec) (int64, error) {
	v, _, err := ctx.GetInt64(spec)
	return v, err
}

func unexpected(fn string, msg engine.Message) error {
	return fmt.Errorf("%w: %s does not take %q", ErrBadBody, fn, msg.Type)
}

// driver: state cell, joined, status, ride.
func (f *funcs) driver(ctx engine.Context, msg engine.Message) error {
	self := ctx.Self()
	switch msg.Type {
	case MsgLocation:
		cell, err := DecodeCellBody(msg.Value)
		if err != nil {
			return err
		}
		if old, _ := ctx.Get(driverCell); string(old) != cell {
			if err := ctx.Set(driverCell, []byte(cell)); err != nil {
				return err
			}
		}
		status, _ := ctx.Get(driverStatus)
		if len(status) == 0 {
			if err := ctx.Set(driverStatus, []byte(StatusFree)); err != nil {
				return err
			}
			status = []byte(StatusFree)
		}
		if string(status) != StatusFree {
			return nil
		}
		joined, _ := ctx.Get(driverJoined)
		if string(joined) == cell {
			return nil
		}
		if len(joined) > 0 {
			ctx.Send(CellAddr(string(joined)), msgOf(msgLeave, self.ID))
		}
		ctx.Send(CellAddr(cell), msgOf(msgJoin, self.ID))
		return ctx.Set(driverJoined, []byte(cell))

	case msgOffer:
		o, err := decodeOffer(msg.Value)
		if err != nil {
			return err
		}
		ride := o.Ride
		status, _ := ctx.Get(driverStatus)
		if string(status) != StatusFree {
			ctx.Send(RideAddr(ride), msgOf(msgDecline, self.ID))
			return nil
		}
		if err := ctx.Set(driverStatus, []byte(StatusOnRide)); err != nil {
			return err
		}
		if err := ctx.Set(driverRide, []byte(ride)); err != nil {
			return err
		}
		// Always leave the joined cell, even when it is the offering one:
		// the driver may have left and re-joined it while the offer was in
		// flight, and leave is a no-op for a driver not in the set.
		if joined, _ := ctx.Get(driverJoined); len(joined) > 0 {
			ctx.Send(CellAddr(string(joined)), msgOf(msgLeave, self.ID))
			if err := ctx.Remove(driverJoined); err != nil {
				return err
			}
		}
		ctx.Send(RideAddr(ride), msgOf(msgAccept, self.ID))
		ctx.SendAfter(f.cfg.finishDelay(ride), self, msgOf(msgFinish, ride), "")
		return nil

	case msgFinish:
		ride, err := decodeID(msg.Type, msg.Value)
		if err != nil {
			return err
		}
		status, _ := ctx.Get(driverStatus)
		cur, _ := ctx.Get(driverRide)
		if string(status) != StatusOnRide || string(cur) != string(ride) {
			return nil // stale
		}
		rideID := string(ride)
		if err := ctx.Set(driverStatus, []byte(StatusFree)); err != nil {
			return err
		}
		if err := ctx.Remove(driverRide); err != nil {
			return err
		}
		if cell, _ := ctx.Get(driverCell); len(cell) > 0 {
			ctx.Send(CellAddr(string(cell)), msgOf(msgJoin, self.ID))
			if err := ctx.Set(driverJoined, cell); err != nil {
				return err
			}
		}
		ctx.Send(RideAddr(rideID), msgOf(msgCompleted, self.ID))
		return nil
	}
	return unexpected("rides/driver", msg)
}

// passenger: state ride, rides, seq, seen.
func (f *funcs) passenger(ctx engine.Context, msg engine.Message) error {
	self := ctx.Self()
	switch msg.Type {
	case MsgRequest:
		cell, err := DecodeCellBody(msg.Value)
		if err != nil {
			return err
		}
		if cur, _ := ctx.Get(passengerRide); len(cur) > 0 {
			ctx.Reply(engine.Message{Type: MsgOutcome, Value: AppendOutcome(nil, Outcome{Failed: true})})
			return nil
		}
		seq, err := getInt(ctx, passengerSeq)
		if err != nil {
			return err
		}
		seq++
		if err := ctx.SetInt64(passengerSeq, seq); err != nil {
			return err
		}
		id := self.ID + "-" + strconv.FormatInt(seq, 10)
		if err := ctx.Set(passengerRide, []byte(id)); err != nil {
			return err
		}
		ctx.Send(RideAddr(id), msgOf(msgInit, self.ID, cell, self.String()))
		return nil

	case msgFailed, msgCompleted:
		ride, err := decodeID(msg.Type, msg.Value)
		if err != nil {
			return err
		}
		if cur, _ := ctx.Get(passengerRide); string(cur) != string(ride) {
			return nil
		}
		if err := ctx.Remove(passengerRide); err != nil {
			return err
		}
		if msg.Type == msgCompleted {
			n, err := getInt(ctx, passengerRides)
			if err != nil {
				return err
			}
			return ctx.SetInt64(passengerRides, n+1)
		}
		return nil

	case MsgTouch:
		cell, err := DecodeCellBody(msg.Value)
		if err != nil {
			return err
		}
		return ctx.Set(passengerSeen, []byte(cell))
	}
	return unexpected("rides/passenger", msg)
}

// geocell: state free.
func (f *funcs) geocell(ctx engine.Context, msg engine.Message) error {
	switch msg.Type {
	case msgJoin, msgLeave:
		d, err := decodeID(msg.Type, msg.Value)
		if err != nil {
			return err
		}
		if msg.Type == msgJoin {
			return ctx.MapSet(cellFree, string(d), nil)
		}
		return ctx.MapDelete(cellFree, string(d))

	case msgFind:
		m, err := decodeFind(msg.Value)
		if err != nil {
			return err
		}
		ride, origin, hop := m.Ride, m.Origin, m.Hop
		if _, ok := f.cfg.neighbour(origin, hop); !ok {
			return fmt.Errorf("%w: %s: hop %d from origin %q is not a cell of the %dx%d grid", ErrBadBody, msg.Type, hop, origin, f.cfg.Grid, f.cfg.Grid)
		}
		driver := ""
		if err := ctx.MapRange(cellFree, func(key string, _ []byte) bool { driver = key; return false }); err != nil {
			return err
		}
		if driver != "" {
			if err := ctx.MapDelete(cellFree, driver); err != nil {
				return err
			}
			ctx.Send(DriverAddr(driver), msgOf(msgOffer, ride, ctx.Self().ID))
			return nil
		}
		for h := hop + 1; h <= maxHop; h++ {
			if n, ok := f.cfg.neighbour(origin, h); ok {
				b := appendFind(make([]byte, 0, len(ride)+len(origin)+3), findMsg{Ride: ride, Origin: origin, Hop: h})
				ctx.Send(CellAddr(n), engine.Message{Type: msgFind, Value: b})
				return nil
			}
		}
		ctx.Send(RideAddr(ride), engine.Message{Type: msgNone})
		return nil
	}
	return unexpected("rides/geocell", msg)
}

// ride: state passenger, driver, cell, status, reply, tries.
func (f *funcs) ride(ctx engine.Context, msg engine.Message) error {
	self := ctx.Self()
	status, _ := ctx.Get(rideStatus)
	switch msg.Type {
	case msgInit:
		m, err := decodeInit(msg.Value)
		if err != nil {
			return err
		}
		passenger, cell, reply := m.Passenger, m.Cell, m.Reply
		if len(status) > 0 {
			return nil // a ride is initialised once
		}
		for _, kv := range []struct {
			spec engine.ValueSpec
			v    string
		}{{ridePassenger, passenger}, {rideCell, cell}, {rideReply, reply}, {rideStatus, StatusSearching}} {
			if err := setStr(ctx, kv.spec, kv.v); err != nil {
				return err
			}
		}
		ctx.Send(CellAddr(cell), f.find(self.ID, cell))
		return nil

	case msgAccept:
		d, err := decodeID(msg.Type, msg.Value)
		if err != nil {
			return err
		}
		driver := string(d)
		if string(status) != StatusSearching {
			return nil // cannot happen: one offer is in flight at a time
		}
		if err := ctx.Set(rideDriver, []byte(driver)); err != nil {
			return err
		}
		if err := ctx.Set(rideStatus, []byte(StatusStarted)); err != nil {
			return err
		}
		ctx.Reply(engine.Message{Type: MsgOutcome, Value: AppendOutcome(nil, Outcome{Ride: self.ID, Driver: driver})})
		p, _ := ctx.Get(ridePassenger)
		ctx.Egress(EgressName, engine.Message{Type: MsgEvent, Value: AppendEvent(nil, Event{
			Kind: KindStarted, Ride: self.ID, Driver: driver, Passenger: string(p)})})
		return nil

	case msgDecline:
		if _, err := decodeID(msg.Type, msg.Value); err != nil {
			return err
		}
		if string(status) != StatusSearching {
			return nil
		}
		tries, err := getInt(ctx, rideTries)
		if err != nil {
			return err
		}
		tries++
		if tries > int64(f.cfg.MaxRetries) {
			return f.fail(ctx)
		}
		if err := ctx.SetInt64(rideTries, tries); err != nil {
			return err
		}
		cell, _ := ctx.Get(rideCell)
		ctx.Send(CellAddr(string(cell)), f.find(self.ID, string(cell)))
		return nil

	case msgNone:
		if err := decodeNone(msg.Value); err != nil {
			return err
		}
		if string(status) != StatusSearching {
			return nil
		}
		return f.fail(ctx)

	case msgCompleted:
		driver, err := decodeID(msg.Type, msg.Value)
		if err != nil {
			return err
		}
		cur, _ := ctx.Get(rideDriver)
		if string(status) != StatusStarted || string(cur) != string(driver) {
			return nil
		}
		if err := ctx.Set(rideStatus, []byte(StatusCompleted)); err != nil {
			return err
		}
		p, _ := ctx.Get(ridePassenger)
		ctx.Send(PassengerAddr(string(p)), msgOf(msgCompleted, self.ID))
		ctx.Egress(EgressName, engine.Message{Type: MsgEvent, Value: AppendEvent(nil, Event{
			Kind: KindCompleted, Ride: self.ID, Driver: string(driver), Passenger: string(p)})})
		return nil
	}
	return unexpected("rides/ride", msg)
}

func (f *funcs) find(ride, cell string) engine.Message {
	return engine.Message{Type: msgFind, Value: appendFind(make([]byte, 0, len(ride)+len(cell)+3), findMsg{Ride: ride, Origin: cell})}
}

func (f *funcs) fail(ctx engine.Context) error {
	if err := ctx.Set(rideStatus, []byte(StatusFailed)); err != nil {
		return err
	}
	id := ctx.Self().ID
	ctx.Reply(engine.Message{Type: MsgOutcome, Value: AppendOutcome(nil, Outcome{Ride: id, Failed: true})})
	p, _ := ctx.Get(ridePassenger)
	ctx.Send(PassengerAddr(string(p)), msgOf(msgFailed, id))
	return nil
}
