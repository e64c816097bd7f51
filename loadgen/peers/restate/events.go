package main

import (
	"strconv"

	restate "github.com/restatedev/sdk-go"
)

// The Events object: the ride-events log.
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
