package soak

import (
	"context"
	"strconv"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// badInput sends malformed requests (each has a defined 4xx, or 505 for
// HTTP/9.9) at BadInputRate per second.
func (l *load) badInput(ctx context.Context) {
	long := make([]byte, 10<<10)
	for i := range long {
		long[i] = 'a'
	}
	find := []byte{2, 'r', '1', 3, '5', '-', '5', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}
	type bad struct {
		shape string
		head  []byte
		body  []byte
	}
	loc := rides.AppendCellBody(nil, "1-1")
	cases := []bad{
		{ShapeBadInput, Head(nil, "POST", "/nosuch/type/x", ctypeLocation, len(loc)), loc},                                // 404
		{ShapeBadInput, Head(nil, "POST", "/rides/geocell/5-5", "application/vnd.rides/find", len(find)), find},           // 400
		{ShapeBadInput, Head(nil, "GET", "/rides/driver/x", "", 0), nil},                                                  // 405
		{ShapeBadInput, Head(nil, "POST", "/rides/driver/x?wait=forever", ctypeLocation, len(loc)), loc},                  // 400
		{ShapeBadInput, Head(nil, "POST", "/rides/driver/x?wait=1h", ctypeLocation, len(loc)), loc},                       // 400
		{ShapeBadInput, Head(nil, "POST", "/rides/driver/x", ctypeLocation, int(l.cfg.MaxBody)+1), make([]byte, 128<<10)}, // 413 (the rest of the body is not sent)
		{ShapeBadInput, Head(nil, "POST", "/rides/driver/x", ctypeLocation, len(loc), "X-Long", string(long)), loc},       // 431
		{ShapeBadInput, Head(nil, "POST", "/batch", "application/x-ndjson", 9), []byte("not json\n")},                     // 400
		{ShapeBadInput, Head(nil, "GET", "/egress/ride-events?max=0", "", 0), nil},                                        // 400
		{ShapeHTTP99, []byte("POST /rides/driver/x HTTP/9.9\r\nHost: soak\r\nContent-Type: " + ctypeLocation +
			"\r\nContent-Length: " + strconv.Itoa(len(loc)) + "\r\n\r\n"), loc}, // 505
	}
	c := NewConn(l.ingress, source(srcBad))
	defer c.Close()
	tk := time.NewTicker(time.Second / time.Duration(max(l.cfg.BadInputRate, 1)))
	defer tk.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		b := cases[k%len(cases)]
		a, kind, err := c.Do(b.head, b.body, time.Now().Add(requestTimeout), false)
		t := l.tally.Shape(b.shape)
		if err != nil {
			t.Failure(kind)
		} else {
			t.Answer(a)
		}
		c.Close() // several of these leave the connection unusable
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
