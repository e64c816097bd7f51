package main

import (
	"strconv"

	restate "github.com/restatedev/sdk-go"
)

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
