package main

import (
	restate "github.com/restatedev/sdk-go"
)

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
	s, err := getStrings(ctx, stStatus, stRide)
	if err != nil {
		return restate.Void{}, err
	}
	if status, ride := s[0], s[1]; status != statusOnRide || ride != in.Ride {
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
	s, err := getStrings(ctx, stCell, stJoined, stStatus, stRide)
	if err != nil {
		return DriverView{}, err
	}
	return DriverView{Cell: s[0], Joined: s[1], Status: s[2], Ride: s[3]}, nil
}
