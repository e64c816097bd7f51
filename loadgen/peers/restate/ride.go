package main

import (
	restate "github.com/restatedev/sdk-go"
)

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
	s, err := getStrings(ctx, stReply, stPassenger)
	if err != nil {
		return restate.Void{}, err
	}
	reply, passenger := s[0], s[1]
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
	s, err := getStrings(ctx, stReply, stPassenger)
	if err != nil {
		return restate.Void{}, err
	}
	reply, passenger := s[0], s[1]
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
	s, err := getStrings(ctx, stPassenger, stDriver, stCell, stStatus)
	if err != nil {
		return RideView{}, err
	}
	return RideView{Passenger: s[0], Driver: s[1], Cell: s[2], Status: s[3]}, nil
}
