package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/shardfn/shardfn/internal/format"
)

// ReadEgress reads durable records of egress name from offset from, at most
// max (default 100, at most 10000) and, when maxBytes > 0, at most maxBytes
// bytes of records (each counted as its source, type and value), except
// that the first record is always returned whatever its size, so a reader
// always progresses. With wait > 0 it long-polls until at least one record
// exists, wait passes, or ctx ends.
func (e *Engine) ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]EgressRecord, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty egress name", ErrBadMessage)
	}
	if max <= 0 {
		max = 100
	}
	if max > 10000 {
		max = 10000
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		e.egressMu.Lock()
		ch := e.egressCh
		e.egressMu.Unlock()
		var out []EgressRecord
		var derr error
		size := 0
		err := e.st.ReadEgress(name, from, max, func(off uint64, v []byte) bool {
			if maxBytes > 0 && len(out) > 0 && size+len(v) > maxBytes {
				return false // over the byte budget: the caller continues from here
			}
			size += len(v)
			src, typ, payload, err := format.DecodeEgressValue(v)
			if err != nil {
				derr = err
				return false
			}
			out = append(out, EgressRecord{Offset: off, Source: src,
				Message: Message{Type: string(typ), Value: append([]byte(nil), payload...)}})
			return true
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return nil, fmt.Errorf("engine: read egress %s: %w", name, err)
		}
		if len(out) > 0 || deadline == nil {
			return out, nil
		}
		select {
		case <-ch:
		case <-deadline:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// State returns the durable state values of an instance: what the store
// holds once everything durable at the time of the call is applied.
func (e *Engine) State(ctx context.Context, addr Address) ([]StateValue, error) {
	if addr.Namespace == "" || addr.Type == "" || addr.ID == "" {
		return nil, fmt.Errorf("%w: %q", ErrBadAddress, addr.String())
	}
	if err := e.waitApplied(ctx, e.wal.Durable()); err != nil {
		return nil, err
	}
	specs, err := e.reg.stateSpecs(addr) // ErrUnknownType for an unregistered type
	if err != nil {
		return nil, err
	}
	now := e.now()
	var out []StateValue
	raw := format.AppendAddress(nil, addr)
	err = e.st.LoadInstance(format.KeyGroup(addr.Hash()), raw, func(name []byte, writtenAt int64, value []byte) {
		sv := StateValue{Spec: ValueSpec{Name: string(name)}, Value: append([]byte(nil), value...), Present: true}
		for _, sp := range specs {
			if sp.Name == sv.Spec.Name {
				sv.Spec = fromShardSpec(sp)
				if sp.Expired(writtenAt, now) {
					return
				}
			}
		}
		out = append(out, sv)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: state of %s: %w", addr, err)
	}
	out = appendUnset(out, specs) // declared values not set: Present false
	if fe := e.reg.lookup(addr.Namespace, addr.Type); fe != nil {
		for _, name := range fe.ft.MapNames {
			sv := StateValue{Spec: ValueSpec{Name: name, Type: TypeMap}}
			err := e.st.LoadMap(format.KeyGroup(addr.Hash()), raw, []byte(name), func(k, v []byte) bool {
				sv.MapLen++
				if len(sv.Map) < MaxStateMapEntries {
					sv.Map = append(sv.Map, MapEntry{Key: string(k), Value: append([]byte(nil), v...)})
				}
				return true
			})
			if err != nil {
				return nil, fmt.Errorf("engine: map %s of %s: %w", name, addr, err)
			}
			sv.Present = sv.MapLen > 0
			out = append(out, sv)
		}
	}
	return out, nil
}

// waitApplied waits until the store has applied the log up to pos.
func (e *Engine) waitApplied(ctx context.Context, pos uint64) error {
	for e.ap.applied.Load() < pos {
		select {
		case e.apWake <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
		if err := e.Err(); err != nil {
			return err
		}
	}
	return nil
}
