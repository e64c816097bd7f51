package rides

import (
	"encoding/binary"
	"fmt"
)

// Limits of the fields of RS-1 messages. Every decoder enforces them, so a
// message built by hand (from ingress, a remote function or a corrupted
// record) cannot make a function loop, allocate without bound or address
// an instance the workload never makes.
const (
	// MaxCellBytes bounds a cell id ("x-y").
	MaxCellBytes = 64
	// MaxIDBytes bounds a driver, passenger or ride id: an ingress id (at
	// most 1024 bytes) plus "-<sequence number>" for rides.
	MaxIDBytes = 1024 + 21
	// maxReplyBytes bounds the reply address of rides/init
	// ("rides/passenger/<id>").
	maxReplyBytes = 64 + MaxIDBytes
	// maxHop is the last hop of the neighbour search (hop 0 is the origin
	// cell, hops 1..8 its neighbours).
	maxHop = 8
)

// Internal messages are a sequence of fields, each uvarint(len) bytes; a
// hop count is a plain uvarint.

func appendField(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// fieldReader reads fields written by appendField; the first error sticks.
// Errors name the message type (typ) and the field.
type fieldReader struct {
	typ string
	b   []byte
	err error
}

func (r *fieldReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", ErrBadBody, r.typ, fmt.Sprintf(format, args...))
	}
}

// field reads one field of 1..max bytes (0..max when empty is true).
func (r *fieldReader) field(name string, max int, empty bool) []byte {
	if r.err != nil {
		return nil
	}
	l, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.fail("missing field %s", name)
		return nil
	case n < 0:
		r.fail("field %s: length is not a valid uvarint", name)
		return nil
	case l > uint64(max):
		r.fail("field %s is %d bytes long; at most %d are allowed", name, l, max)
		return nil
	case l > uint64(len(r.b)-n):
		r.fail("field %s is truncated: %d bytes declared, %d present", name, l, len(r.b)-n)
		return nil
	case l == 0 && !empty:
		r.fail("field %s is empty", name)
		return nil
	}
	v := r.b[n : n+int(l) : n+int(l)]
	r.b = r.b[n+int(l):]
	return v
}

// small reads a uvarint that must be at most max (no int overflow).
func (r *fieldReader) small(name string, max int) int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.fail("missing field %s", name)
		return 0
	case n < 0:
		r.fail("field %s is not a valid uvarint (it overflows 64 bits)", name)
		return 0
	case v > uint64(max):
		r.fail("field %s is %d; it must be from 0 to %d", name, v, max)
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

// end fails unless every byte was read.
func (r *fieldReader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d unexpected bytes after the last field", len(r.b))
	}
	return r.err
}

// decodeID decodes the one-field body of rides/join, rides/leave
// (driver), rides/accept, rides/decline (driver), rides/finish (ride),
// rides/completed (driver to a ride, ride to a passenger) and rides/failed
// (ride). The id aliases b.
func decodeID(typ string, b []byte) ([]byte, error) {
	r := fieldReader{typ: typ, b: b}
	id := r.field("id", MaxIDBytes, false)
	return id, r.end()
}

// findMsg is the body of rides/find: the ride looking for a driver, the
// cell it started from and how far the neighbour search has gone.
type findMsg struct {
	Ride, Origin string
	Hop          int
}

func appendFind(dst []byte, m findMsg) []byte {
	dst = appendField(dst, m.Ride)
	dst = appendField(dst, m.Origin)
	return binary.AppendUvarint(dst, uint64(m.Hop))
}

// decodeFind decodes rides/find; the hop must be 0..8.
func decodeFind(b []byte) (findMsg, error) {
	r := fieldReader{typ: msgFind, b: b}
	ride := r.field("ride", MaxIDBytes, false)
	origin := r.field("origin", MaxCellBytes, false)
	hop := r.small("hop", maxHop)
	if err := r.end(); err != nil {
		return findMsg{}, err
	}
	return findMsg{Ride: string(ride), Origin: string(origin), Hop: hop}, nil
}

// offerMsg is the body of rides/offer: the ride offered and the cell that
// offers it.
type offerMsg struct{ Ride, Cell string }

func appendOffer(dst []byte, m offerMsg) []byte {
	return appendField(appendField(dst, m.Ride), m.Cell)
}

func decodeOffer(b []byte) (offerMsg, error) {
	r := fieldReader{typ: msgOffer, b: b}
	ride := r.field("ride", MaxIDBytes, false)
	cell := r.field("cell", MaxCellBytes, false)
	if err := r.end(); err != nil {
		return offerMsg{}, err
	}
	return offerMsg{Ride: string(ride), Cell: string(cell)}, nil
}

// initMsg is the body of rides/init: the passenger, the pickup cell and
// the address waiting for the outcome.
type initMsg struct{ Passenger, Cell, Reply string }

func appendInit(dst []byte, m initMsg) []byte {
	return appendField(appendField(appendField(dst, m.Passenger), m.Cell), m.Reply)
}

func decodeInit(b []byte) (initMsg, error) {
	r := fieldReader{typ: msgInit, b: b}
	p := r.field("passenger", MaxIDBytes, false)
	cell := r.field("cell", MaxCellBytes, false)
	reply := r.field("reply", maxReplyBytes, false)
	if err := r.end(); err != nil {
		return initMsg{}, err
	}
	return initMsg{Passenger: string(p), Cell: string(cell), Reply: string(reply)}, nil
}

// decodeNone checks the body of rides/none, which is empty.
func decodeNone(b []byte) error {
	if len(b) != 0 {
		return fmt.Errorf("%w: %s: want an empty body, got %d bytes", ErrBadBody, msgNone, len(b))
	}
	return nil
}
