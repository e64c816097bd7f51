package main

import (
	restate "github.com/restatedev/sdk-go"
)

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
