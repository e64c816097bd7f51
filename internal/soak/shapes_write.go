package soak

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// requests: ride requests with ?wait=5s from fresh passengers, in random
// cells (request-reply).
func (l *load) requests(ctx context.Context) {
	conns := make([]*Conn, l.cfg.RequestConns)
	for i := range conns {
		conns[i] = NewConn(l.ingress, source(srcRequest))
	}
	var seq atomic.Int64
	openLoop(ctx, float64(l.cfg.RequestRate), len(conns), &l.shed, func(w int) {
		n := seq.Add(1)
		cell := strconv.Itoa(int(n*37%100)) + "-" + strconv.Itoa(int(n*53%100))
		if n%4 == 0 {
			cell = fanInCell // request-reply against the fan-in cell
		}
		b := rides.AppendCellBody(nil, cell)
		h := Head(nil, "POST", "/rides/passenger/p-"+strconv.FormatInt(n, 10)+"?wait=5s", "application/vnd."+rides.MsgRequest, len(b))
		a, kind, err := conns[w].Do(h, b, time.Now().Add(requestTimeout), false)
		acked := 0
		t := l.tally.Shape(ShapeRequest)
		if t.Exchange(a, kind, err, time.Time{}) {
			acked = 1
		}
		t.Messages(1, acked)
	})
	for _, c := range conns {
		c.Close()
	}
}

const fanInCell = "50-50"

// batchShape sends batches of n messages built by line(i) at rate messages
// per second over conns connections.
func (l *load) batchShape(ctx context.Context, shape string, rate, n, conns int, src byte, line func(b []byte) []byte) {
	cs := make([]*Conn, conns)
	for i := range cs {
		cs[i] = NewConn(l.ingress, source(src))
	}
	openLoop(ctx, float64(rate)/float64(n), conns, &l.shed, func(w int) {
		var body []byte
		for range n {
			body = line(body)
		}
		h := Head(nil, "POST", "/batch", "application/x-ndjson", len(body))
		a, kind, err := cs[w].Do(h, body, time.Now().Add(requestTimeout), false)
		t := l.tally.Shape(shape)
		if err != nil {
			t.Failure(kind)
		} else {
			t.Answer(a)
		}
		acked := 0
		if err == nil && a.Status/100 == 2 {
			acked = n
		}
		t.Messages(n, acked)
	})
	for _, c := range cs {
		c.Close()
	}
}

// fill: rides/touch to fresh passengers, so that the state cache fills to
// its budget and evicts.
func (l *load) fill(ctx context.Context) {
	l.batchShape(ctx, ShapeFill, l.cfg.FillRate, 100, 4, srcFill, func(b []byte) []byte { return l.touchBatch(b, 1) })
}

// fanIn: FanInDrivers drivers all reporting the one cell fanInCell (each
// joins its free set, a map state written entry by entry).
func (l *load) fanIn(ctx context.Context) {
	var seq atomic.Int64
	l.batchShape(ctx, ShapeFanIn, l.cfg.FanInRate, 100, 4, srcFill, func(b []byte) []byte {
		n := seq.Add(1) % int64(l.cfg.FanInDrivers)
		b = append(b, `{"to":"rides/driver/fan-`...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, `","type":"rides/location","body":{"cell":"`+fanInCell+`"}}`+"\n"...)
		return b
	})
}
