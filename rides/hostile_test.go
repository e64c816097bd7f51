package rides

import (
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// wedgeFind is the 17-byte rides/find body of issue 10: ride "r1", origin
// "5-5" and a hop count of 2^63, a uvarint that overflows int; the geocell
// used to loop from -2^63 to 8.
func wedgeFind() []byte {
	b := appendField(appendField(nil, "r1"), "5-5")
	return binary.AppendUvarint(b, 1<<63)
}

func TestWedgeFindRejected(t *testing.T) {
	body := wedgeFind()
	if len(body) != 17 {
		t.Fatalf("the issue's body is 17 bytes, built %d", len(body))
	}
	if _, err := decodeFind(body); !errors.Is(err, ErrBadBody) || !strings.Contains(err.Error(), "hop") {
		t.Fatalf("decodeFind: %v, want a bad hop", err)
	}
	// Arriving internally (from a function), the geocell refuses it at once
	// instead of looping: the invocation fails and the message becomes a
	// dead letter.
	s := newSim(Config{})
	s.send(CellAddr("5-5"), engine.Message{Type: msgFind, Value: body}, 0)
	done := make(chan error, 1)
	go func() { done <- s.run() }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrBadBody) {
			t.Fatalf("geocell took the wedge find: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the geocell is still looping on the wedge find")
	}
}

// TestIngressRefusesInternalTypes: on the engine, the internal message
// types are refused from ingress (they used to be accepted, which let the
// wedge find in), with an error naming what the type accepts; the wire
// types still work.
func TestIngressRefusesInternalTypes(t *testing.T) {
	e, err := engine.Open(engine.Options{Shards: 2}, Specs()...)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		to   engine.Address
		typ  string
		body []byte
		want string
	}{
		{CellAddr("5-5"), msgFind, wedgeFind(), "no messages from ingress"},
		{CellAddr("5-5"), msgJoin, fields("d-1"), "no messages from ingress"},
		{RideAddr("p-1-1"), msgAccept, fields("d-1"), "no messages from ingress"},
		{DriverAddr("d-1"), msgOffer, fields("r", "1-1"), "accepts rides/location from ingress"},
		{DriverAddr("d-1"), MsgRequest, AppendCellBody(nil, "1-1"), "accepts rides/location from ingress"},
		{PassengerAddr("p-1"), msgCompleted, fields("r"), "accepts rides/request, rides/touch from ingress"},
	} {
		_, err := e.Send(ctx, c.to, engine.Message{Type: c.typ, Value: c.body})
		if !errors.Is(err, engine.ErrIngressType) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s <- %s: %v, want ErrIngressType saying %q", c.to, c.typ, err, c.want)
		}
	}
	if _, err := e.Send(ctx, DriverAddr("d-1"), LocationMessage("5-5")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Send(ctx, PassengerAddr("p-1"), TouchMessage("5-5")); err != nil {
		t.Fatal(err)
	}
	reply, err := e.Request(ctx, PassengerAddr("p-1"), RequestMessage("5-5"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := DecodeOutcome(reply.Value); err != nil || o.Driver != "d-1" {
		t.Fatalf("outcome %+v %v", o, err)
	}
}

// TestDecodersValidate: every internal decoder checks field count, lengths,
// emptiness and ranges, and says which message and field is wrong.
func TestDecodersValidate(t *testing.T) {
	long := strings.Repeat("x", MaxIDBytes+1)
	cell := strings.Repeat("1", MaxCellBytes+1)
	bad := []struct {
		name string
		err  func() error
		want string
	}{
		{"id missing", func() error { _, err := decodeID(msgJoin, nil); return err }, "rides/join: missing field id"},
		{"id empty", func() error { _, err := decodeID(msgJoin, fields("")); return err }, "field id is empty"},
		{"id too long", func() error { _, err := decodeID(msgLeave, fields(long)); return err }, "at most"},
		{"id trailing", func() error { _, err := decodeID(msgAccept, fields("d", "e")); return err }, "unexpected bytes"},
		{"id truncated", func() error { _, err := decodeID(msgDecline, []byte{5, 'a'}); return err }, "truncated"},
		{"id huge length", func() error {
			_, err := decodeID(msgFinish, binary.AppendUvarint(nil, 1<<63))
			return err
		}, "at most"},
		{"id bad uvarint", func() error {
			_, err := decodeID(msgFailed, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
			return err
		}, "not a valid uvarint"},
		{"find hop 9", func() error { _, err := decodeFind(appendFind(nil, findMsg{"r", "1-1", 9})); return err }, "hop is 9"},
		{"find no hop", func() error { _, err := decodeFind(fields("r", "1-1")); return err }, "missing field hop"},
		{"find long origin", func() error { _, err := decodeFind(appendFind(nil, findMsg{"r", cell, 0})); return err }, "origin"},
		{"offer no cell", func() error { _, err := decodeOffer(fields("r")); return err }, "missing field cell"},
		{"offer long cell", func() error { _, err := decodeOffer(fields("r", cell)); return err }, "cell"},
		{"init no reply", func() error { _, err := decodeInit(fields("p", "1-1")); return err }, "missing field reply"},
		{"init extra", func() error { _, err := decodeInit(fields("p", "1-1", "x", "y")); return err }, "unexpected bytes"},
		{"none with body", func() error { return decodeNone([]byte{0}) }, "empty body"},
		{"cell too long", func() error { _, err := DecodeCellBody(AppendCellBody(nil, cell)); return err }, "at most"},
		{"cell twice", func() error { _, err := DecodeCellBody([]byte(`{"cell":"1-1","cell":"2-2"}`)); return err }, "twice"},
		{"outcome failed string", func() error { _, err := DecodeOutcome([]byte(`{"ride":"r","failed":"yes"}`)); return err }, "true or false"},
		{"outcome ride number", func() error { _, err := DecodeOutcome([]byte(`{"ride":1,"driver":"d"}`)); return err }, "must be a string"},
		{"event kind", func() error { _, err := DecodeEvent([]byte(`{"kind":"ride-lost","ride":"r"}`)); return err }, "kind"},
		{"set empty entry", func() error { _, err := DecodeSet([]byte{0}); return err }, "empty"},
	}
	for _, c := range bad {
		err := c.err()
		if !errors.Is(err, ErrBadBody) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadBody saying %q", c.name, err, c.want)
		}
	}
	// A hop past the grid from a real cell, or from a non-grid origin, is
	// refused by the geocell (cell coordinates are checked).
	for _, m := range []findMsg{{"r", "0-0", 1}, {"r", "not-a-cell", 2}} {
		s := newSim(Config{Grid: 10})
		s.send(CellAddr("x"), engine.Message{Type: msgFind, Value: appendFind(nil, m)}, 0)
		if err := s.run(); !errors.Is(err, ErrBadBody) || !strings.Contains(err.Error(), "grid") {
			t.Errorf("find %+v: %v", m, err)
		}
	}
}

// Fuzz targets: one per decoder. Each checks that the decoder never panics
// or loops, that what it accepts is within the limits, and that encoding an
// accepted value gives a body that decodes to the same value. Their seed
// corpora run with go test; make fuzz explores.

func FuzzDecodeID(f *testing.F) {
	f.Add(fields("d-17"))
	f.Add(fields(""))
	f.Add([]byte{0x80})
	f.Add(binary.AppendUvarint(nil, 1<<63))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decodeID(msgJoin, b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if len(id) == 0 || len(id) > MaxIDBytes {
			t.Fatalf("accepted id of %d bytes", len(id))
		}
		if again, err := decodeID(msgJoin, fields(string(id))); err != nil || string(again) != string(id) {
			t.Fatalf("round trip %q: %q %v", id, again, err)
		}
	})
}

func FuzzDecodeFind(f *testing.F) {
	f.Add(wedgeFind())
	f.Add(appendFind(nil, findMsg{"p-1-1", "12-40", 3}))
	f.Add(appendFind(nil, findMsg{"p-1-1", "12-40", 8}))
	f.Add(fields("r", "1-1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeFind(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if m.Hop < 0 || m.Hop > maxHop || m.Ride == "" || m.Origin == "" || len(m.Ride) > MaxIDBytes || len(m.Origin) > MaxCellBytes {
			t.Fatalf("accepted %+v", m)
		}
		if again, err := decodeFind(appendFind(nil, m)); err != nil || again != m {
			t.Fatalf("round trip %+v: %+v %v", m, again, err)
		}
		// The geocell's search from any accepted find ends within the
		// eight hops.
		s := newSim(Config{Grid: 100})
		s.send(CellAddr("c"), engine.Message{Type: msgFind, Value: b}, 0)
		for i := 0; len(s.queue) > 0 && i < 20; i++ {
			e := s.queue[0]
			if e.to.Type != TypeGeocell {
				break
			}
			s.queue = s.queue[1:]
			s.cur = e
			if err := s.fns[e.to.FunctionType()].Invoke(s, e.msg); err != nil {
				return
			}
			if i == 19 {
				t.Fatalf("search from %+v does not end", m)
			}
		}
	})
}

func FuzzDecodeOffer(f *testing.F) {
	f.Add(appendOffer(nil, offerMsg{"p-1-1", "12-40"}))
	f.Add(fields("r"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeOffer(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if m.Ride == "" || m.Cell == "" || len(m.Ride) > MaxIDBytes || len(m.Cell) > MaxCellBytes {
			t.Fatalf("accepted %+v", m)
		}
		if again, err := decodeOffer(appendOffer(nil, m)); err != nil || again != m {
			t.Fatalf("round trip %+v: %+v %v", m, again, err)
		}
	})
}

func FuzzDecodeInit(f *testing.F) {
	f.Add(appendInit(nil, initMsg{"p-9", "12-40", "rides/passenger/p-9"}))
	f.Add(fields("p", "1-1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeInit(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if m.Passenger == "" || m.Cell == "" || m.Reply == "" || len(m.Passenger) > MaxIDBytes || len(m.Cell) > MaxCellBytes || len(m.Reply) > maxReplyBytes {
			t.Fatalf("accepted %+v", m)
		}
		if again, err := decodeInit(appendInit(nil, m)); err != nil || again != m {
			t.Fatalf("round trip %+v: %+v %v", m, again, err)
		}
	})
}

func FuzzDecodeNone(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := decodeNone(b); (err == nil) != (len(b) == 0) {
			t.Fatalf("decodeNone(%q) = %v", b, err)
		}
	})
}

func FuzzDecodeCellBody(f *testing.F) {
	f.Add([]byte(`{"cell":"12-40"}`))
	f.Add([]byte(` { "x" : 1.5e3, "ok":true, "n":null, "cell" : "3-4" } `))
	f.Add([]byte(`{"cell":"\ud83d\ude00"}`))
	f.Add([]byte(`{"cell":"a\u00"}`))
	f.Add([]byte(`{"cell":"1-1","cell":"2-2"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cell, err := DecodeCellBody(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if cell == "" || len(cell) > MaxCellBytes {
			t.Fatalf("accepted cell %q", cell)
		}
		if again, err := DecodeCellBody(AppendCellBody(nil, cell)); err != nil || (again != cell && validUTF8(cell)) {
			t.Fatalf("round trip %q: %q %v", cell, again, err)
		}
	})
}

func FuzzDecodeOutcome(f *testing.F) {
	f.Add(AppendOutcome(nil, Outcome{Ride: "p-1-1", Driver: "d-1"}))
	f.Add(AppendOutcome(nil, Outcome{Failed: true}))
	f.Add([]byte(`{"ride":"r","failed":"yes"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeOutcome(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if !o.Failed && (o.Ride == "" || o.Driver == "") {
			t.Fatalf("accepted %+v", o)
		}
		if again, err := DecodeOutcome(AppendOutcome(nil, o)); err != nil || (again != o && validUTF8(o.Ride+o.Driver)) {
			t.Fatalf("round trip %+v: %+v %v", o, again, err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(AppendEvent(nil, Event{Kind: KindStarted, Ride: "p-9-1", Driver: "d-17", Passenger: "p-9"}))
	f.Add([]byte(`{"kind":"ride-completed","ride":"r"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if e.Ride == "" || (e.Kind != KindStarted && e.Kind != KindCompleted) {
			t.Fatalf("accepted %+v", e)
		}
		if again, err := DecodeEvent(AppendEvent(nil, e)); err != nil || (again != e && validUTF8(e.Ride+e.Driver+e.Passenger)) {
			t.Fatalf("round trip %+v: %+v %v", e, again, err)
		}
	})
}

func FuzzDecodeSet(f *testing.F) {
	f.Add(EncodeSet("d-1", "d-22"))
	f.Add([]byte{5, 'a'})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := DecodeSet(b)
		if err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("error %v is not ErrBadBody", err)
			}
			return
		}
		if again, err := DecodeSet(EncodeSet(ids...)); err != nil || !reflect.DeepEqual(again, ids) {
			t.Fatalf("round trip %q: %q %v", ids, again, err)
		}
	})
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
