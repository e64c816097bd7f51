package soak

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/rides"
)

// Source addresses of the shapes: loopback addresses other than 127.0.0.1,
// so that each shape stays under the server's limit per client address
// (a quarter of --max-conns) unless it means to pass it.
func source(last byte) net.IP { return net.IPv4(127, 0, 0, last) }

const (
	srcProbe    = 2
	srcWorkers  = 10 // 10..13
	srcRequest  = 14
	srcFill     = 15
	srcBigBody  = 16
	srcEgress   = 17
	srcSlow     = 18
	srcHalfOpen = 19
	srcFlood    = 20 // 20..27
	srcFloodOne = 28
	srcBad      = 29
)

// requestTimeout bounds a normal request: an answer later than this is a
// failure (the server answers within its own limits: ?wait= at most 5s
// here, 503 at once when overloaded).
const requestTimeout = 30 * time.Second

// load is the state shared by the shapes of one run.
type load struct {
	cfg     *Config
	ingress string
	tally   *Tally

	// Tracked drivers: drivers[w] belongs to location sender w.
	drivers [][]driverTrack

	shed      atomic.Int64 // open-loop sends dropped because every sender was busy
	fillSeq   atomic.Int64
	floods    atomic.Int64
	floodConn atomic.Int64 // connections opened by floods
	floodRef  atomic.Int64 // of which refused at accept
}

func newLoad(cfg *Config, ingress string, tally *Tally) *load {
	l := &load{cfg: cfg, ingress: ingress, tally: tally, drivers: make([][]driverTrack, cfg.Workers)}
	for w := range l.drivers {
		l.drivers[w] = make([]driverTrack, cfg.DriversPerWorker)
	}
	return l
}

func driverID(w, j int) string { return "d-" + strconv.Itoa(w) + "-" + strconv.Itoa(j) }

const ctypeLocation = "application/vnd." + rides.MsgLocation

// locationSender is location sender w: it owns drivers[w] and writes them
// one request at a time, a single message or a batch of BatchSize.
type locationSender struct {
	l      *load
	w      int
	conn   *Conn
	next   int // next driver, round robin
	head   []byte
	body   []byte
	batch  []int // driver indexes of the batch in flight
	cells  []string
	rng    *rand.Rand
	single float64 // share of single-message operations
}

func (l *load) newSender(w int) *locationSender {
	return &locationSender{l: l, w: w, conn: NewConn(l.ingress, source(byte(srcWorkers+w%4))),
		rng: rand.New(rand.NewPCG(uint64(l.cfg.Seed), uint64(w))), single: 0.5}
}

// op sends one operation and returns the messages it carried and how many
// were acknowledged.
func (s *locationSender) op() (sent, acked int) {
	ds := s.l.drivers[s.w]
	if s.rng.Float64() < s.single {
		j := s.next
		s.next = (s.next + 1) % len(ds)
		d := &ds[j]
		cell := cellFor(s.w, j, d.seq)
		d.seq++
		s.body = rides.AppendCellBody(s.body[:0], cell)
		s.head = Head(s.head[:0], "POST", "/rides/driver/"+driverID(s.w, j), ctypeLocation, len(s.body))
		t0 := time.Now()
		a, kind, err := s.conn.Do(s.head, s.body, t0.Add(requestTimeout), false)
		t := s.l.tally.Shape(ShapeLocation)
		if err != nil {
			t.Failure(kind)
		} else {
			t.Answer(a)
			if a.Status/100 == 2 {
				t.Acked(time.Since(t0))
			}
		}
		o := classify(a, err != nil)
		d.record(cell, o)
		if o == outcomeAcked {
			acked = 1
		}
		t.Messages(1, acked)
		return 1, acked
	}
	n := min(s.l.cfg.BatchSize, len(ds))
	s.batch, s.cells = s.batch[:0], s.cells[:0]
	s.body = s.body[:0]
	for range n {
		j := s.next
		s.next = (s.next + 1) % len(ds)
		d := &ds[j]
		cell := cellFor(s.w, j, d.seq)
		d.seq++
		s.batch = append(s.batch, j)
		s.cells = append(s.cells, cell)
		s.body = append(s.body, `{"to":"rides/driver/`...)
		s.body = append(s.body, driverID(s.w, j)...)
		s.body = append(s.body, `","type":"rides/location","body":`...)
		s.body = rides.AppendCellBody(s.body, cell)
		s.body = append(s.body, "}\n"...)
	}
	s.head = Head(s.head[:0], "POST", "/batch", "application/x-ndjson", len(s.body))
	t0 := time.Now()
	a, kind, err := s.conn.Do(s.head, s.body, t0.Add(requestTimeout), false)
	t := s.l.tally.Shape(ShapeBatch)
	if err != nil {
		t.Failure(kind)
	} else {
		t.Answer(a)
		if a.Status/100 == 2 {
			t.Acked(time.Since(t0))
		}
	}
	o := classify(a, err != nil)
	for i, j := range s.batch {
		ds[j].record(s.cells[i], o)
	}
	if o == outcomeAcked {
		acked = n
	}
	t.Messages(n, acked)
	return n, acked
}

// messagesPerOp is the mean number of messages of a location operation.
func (l *load) messagesPerOp() float64 {
	return 0.5 + 0.5*float64(min(l.cfg.BatchSize, l.cfg.DriversPerWorker))
}

// calibrate runs the location senders in closed loop (each sends its next
// operation as soon as the previous is answered) for d and returns the
// acknowledged messages per second: the sustainable rate.
func (l *load) calibrate(ctx context.Context, senders []*locationSender, d time.Duration) float64 {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var acked atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, a := s.op()
				acked.Add(int64(a))
			}
		}()
	}
	wg.Wait()
	return float64(acked.Load()) / time.Since(start).Seconds()
}

// openLoop calls fn at rate per second, spread over workers goroutines,
// until ctx ends; a call due while every worker is busy is dropped and
// counted in shed (the offered rate is then what was sent, and the report
// says so).
func openLoop(ctx context.Context, rate float64, workers int, shed *atomic.Int64, fn func(worker int)) {
	if rate <= 0 || workers <= 0 {
		return
	}
	tokens := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
					fn(w)
				}
			}
		}()
	}
	start := time.Now()
	var issued int64
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
		}
		due := int64(rate * time.Since(start).Seconds())
		for ; issued < due; issued++ {
			select {
			case tokens <- struct{}{}:
			default:
				shed.Add(1)
			}
		}
	}
	wg.Wait()
}

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
		t := l.tally.Shape(ShapeRequest)
		if err != nil {
			t.Failure(kind)
		} else {
			t.Answer(a)
		}
		acked := 0
		if err == nil && a.Status/100 == 2 {
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
	l.batchShape(ctx, ShapeFill, l.cfg.FillRate, 200, 4, srcFill, func(b []byte) []byte {
		n := l.fillSeq.Add(1)
		b = append(b, `{"to":"rides/passenger/f-`...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, `","type":"rides/touch","body":{"cell":"`...)
		b = strconv.AppendInt(b, n%100, 10)
		b = append(b, `-1"}}`+"\n"...)
		return b
	})
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

// bigBody is a location body of size bytes: valid JSON with a cell and a
// padding member (the driver ignores other members), or, when bad, without
// a cell (the driver fails on it: a dead letter).
func bigBody(size int, bad bool) []byte {
	b := make([]byte, 0, size)
	if bad {
		b = append(b, `{"pad":"`...)
	} else {
		b = append(b, `{"cell":"5-5","pad":"`...)
	}
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// seedDeadLetters sends n big bodies the driver function fails on; each
// becomes a dead letter of about 4/3 of its size (base64 in JSON).
func (l *load) seedDeadLetters(ctx context.Context, n int) int {
	body := bigBody(int(l.cfg.MaxBody)-512, true)
	c := NewConn(l.ingress, source(srcBigBody))
	defer c.Close()
	ok := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		h := Head(nil, "POST", "/rides/driver/dl-"+strconv.Itoa(i), ctypeLocation, len(body))
		a, kind, err := c.Do(h, body, time.Now().Add(requestTimeout), false)
		t := l.tally.Shape(ShapeDeadLetter)
		if err != nil {
			t.Failure(kind)
			continue
		}
		t.Answer(a)
		if a.Status/100 == 2 {
			ok++
			t.Messages(1, 1)
		} else {
			t.Messages(1, 0)
			i-- // refused: send it again
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ok
}

// bigBodies: BigBodyConns connections each POSTing near-MaxBody valid
// location bodies in a loop (some with Expect: 100-continue).
func (l *load) bigBodies(ctx context.Context) {
	body := bigBody(int(l.cfg.MaxBody)-512, false)
	var wg sync.WaitGroup
	for i := range l.cfg.BigBodyConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewConn(l.ingress, source(srcBigBody))
			defer c.Close()
			for ctx.Err() == nil {
				var extra []string
				if i%4 == 0 {
					extra = []string{"Expect", "100-continue"}
				}
				h := Head(nil, "POST", "/rides/driver/big-"+strconv.Itoa(i), ctypeLocation, len(body), extra...)
				var a Answer
				var kind string
				var err error
				if len(extra) > 0 {
					a, kind, err = l.expectContinue(c, h, body)
				} else {
					a, kind, err = c.Do(h, body, time.Now().Add(requestTimeout), false)
				}
				t := l.tally.Shape(ShapeBigBody)
				if err != nil {
					t.Failure(kind)
				} else {
					t.Answer(a)
				}
				acked := 0
				if err == nil && a.Status/100 == 2 {
					acked = 1
				}
				t.Messages(1, acked)
				t.Bytes(len(body), 0)
				if err != nil || a.Status == 503 {
					sleepCtx(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// expectContinue sends the head, waits for 100 Continue (or a final answer
// decided from the headers), then the body.
func (l *load) expectContinue(c *Conn, head, body []byte) (Answer, string, error) {
	deadline := time.Now().Add(requestTimeout)
	if err := c.Dial(time.Until(deadline)); err != nil {
		return Answer{}, FailDial, err
	}
	fresh := c.served == 0
	_ = c.c.SetDeadline(deadline)
	if _, err := c.c.Write(head); err != nil {
		a, kind, err := c.read(fresh, false)
		return c.finish(a, kind, err)
	}
	a, kind, err := c.read(fresh, false)
	if err != nil || a.Status != 100 {
		return c.finish(a, kind, err)
	}
	a, kind, err = c.exchange(nil, body, false, false)
	return c.finish(a, kind, err)
}

// egressReaders: EgressReaders connections reading the dead letters (big
// records) in a loop from random offsets, max=10000.
func (l *load) egressReaders(ctx context.Context, seeded int) {
	var wg sync.WaitGroup
	for i := range l.cfg.EgressReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(l.cfg.Seed), uint64(1000+i)))
			c := NewConn(l.ingress, source(srcEgress))
			defer c.Close()
			for ctx.Err() == nil {
				from := 0
				if seeded > 0 {
					from = rng.IntN(seeded)
				}
				h := Head(nil, "GET", "/egress/"+deadLetterEgress+"?from="+strconv.Itoa(from)+"&max=10000", "", 0)
				a, kind, err := c.Do(h, nil, time.Now().Add(requestTimeout), false)
				t := l.tally.Shape(ShapeEgress)
				if err != nil {
					t.Failure(kind)
				} else {
					t.Answer(a)
				}
				if err != nil || a.Status != 200 {
					sleepCtx(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

const deadLetterEgress = "dead-letters"

// slow: SlowConns connections trickling a request one byte every 500ms,
// half of them in the headers, half in a body (the headers at once). The
// server's read timeout (30s) cuts them: 408, or a close.
func (l *load) slow(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range l.cfg.SlowConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shape := ShapeSlowHeader
			if i%2 == 1 {
				shape = ShapeSlowBody
			}
			sleepCtx(ctx, time.Duration(i)*100*time.Millisecond) // spread the starts
			for ctx.Err() == nil {
				l.slowOne(ctx, shape, i)
			}
		}()
	}
	wg.Wait()
}

func (l *load) slowOne(ctx context.Context, shape string, i int) {
	t := l.tally.Shape(shape)
	// Padding makes the trickle last longer than the read timeout.
	body := []byte(`{"cell":"3-3","pad":"`)
	for len(body) < 200 {
		body = append(body, 'y')
	}
	body = append(body, `"}`...)
	head := Head(nil, "POST", "/rides/driver/slow-"+strconv.Itoa(i), ctypeLocation, len(body))
	var atOnce, trickle []byte
	if shape == ShapeSlowHeader {
		trickle = append(head, body...)
	} else {
		atOnce, trickle = head, body
	}
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: source(srcSlow)}}
	nc, err := d.DialContext(ctx, "tcp", l.ingress)
	if err != nil {
		if ctx.Err() == nil {
			t.Failure(FailDial)
			sleepCtx(ctx, time.Second)
		}
		return
	}
	defer nc.Close()
	answered := make(chan struct{})
	var a Answer
	var rerr error
	go func() {
		defer close(answered)
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
		a, rerr = readAnswer(bufio.NewReader(nc), false)
	}()
	if len(atOnce) > 0 {
		_, _ = nc.Write(atOnce)
	}
	tk := time.NewTicker(500 * time.Millisecond)
	defer tk.Stop()
	for k := 0; k < len(trickle); k++ {
		select {
		case <-ctx.Done():
			return // the run is over: not counted
		case <-answered:
			k = len(trickle)
			continue
		case <-tk.C:
		}
		if _, err := nc.Write(trickle[k : k+1]); err != nil {
			break
		}
	}
	select {
	case <-answered:
	case <-ctx.Done():
		return
	}
	l.finishHeld(t, a, rerr)
}

// finishHeld records the end of a connection held by a slow or half-open
// shape: an answer (408 expected), or the server's close.
func (l *load) finishHeld(t *ShapeTally, a Answer, err error) {
	switch {
	case err == nil:
		t.Answer(a)
	case isTimeout(err):
		t.Failure(FailTimeout) // the server kept it open past 2 minutes
	case isClosed(err):
		t.Failure(FailClosed)
	default:
		t.Failure(FailOther)
	}
}

// halfOpen: HalfOpenConns connections that send a partial request (or
// nothing) and never finish it; the server must cut them.
func (l *load) halfOpen(ctx context.Context) {
	var wg sync.WaitGroup
	partial := []string{
		"",
		"POST /rides/driver/h-1 HTTP/1.1\r\nHost: soak\r\nContent-Le",
		"POST /rides/driver/h-2 HTTP/1.1\r\nHost: soak\r\nContent-Type: " + ctypeLocation + "\r\nContent-Length: 20\r\n\r\n{\"ce",
		"GET /egress/ride-events?from=0&max=1",
	}
	for i := range l.cfg.HalfOpenConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sleepCtx(ctx, time.Duration(i)*50*time.Millisecond)
			t := l.tally.Shape(ShapeHalfOpen)
			for ctx.Err() == nil {
				d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: source(srcHalfOpen)}}
				nc, err := d.DialContext(ctx, "tcp", l.ingress)
				if err != nil {
					if ctx.Err() == nil {
						t.Failure(FailDial)
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				if p := partial[i%len(partial)]; p != "" {
					_, _ = nc.Write([]byte(p))
				}
				done := make(chan struct{})
				var a Answer
				var rerr error
				go func() {
					defer close(done)
					_ = nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
					a, rerr = readAnswer(bufio.NewReader(nc), false)
				}()
				select {
				case <-done:
					l.finishHeld(t, a, rerr)
				case <-ctx.Done():
				}
				nc.Close()
			}
		}()
	}
	wg.Wait()
}

// flood opens MaxConns x FloodFactor connections from eight addresses (so
// that the total limit, not the one per client, is met), holds them
// FloodHold, then sends a location write on each one accepted. Connections
// over the limit are answered 503 at accept and closed. Every FloodEvery.
func (l *load) flood(ctx context.Context) {
	sleepCtx(ctx, l.cfg.FloodEvery/2)
	for round := 0; ctx.Err() == nil; round++ {
		start := time.Now()
		n := int(float64(l.cfg.MaxConns) * l.cfg.FloodFactor)
		l.floodRound(ctx, ShapeFlood, n, func(k int) byte { return byte(srcFlood + k%8) })
		// A flood from one address past its limit.
		l.floodRound(ctx, ShapeFloodClient, l.cfg.perClient()+64, func(int) byte { return srcFloodOne })
		l.floods.Add(1)
		sleepCtx(ctx, l.cfg.FloodEvery-time.Since(start))
	}
}

func (l *load) floodRound(ctx context.Context, shape string, n int, src func(k int) byte) {
	t := l.tally.Shape(shape)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256) // dials at once
	holdUntil := time.Now().Add(l.cfg.FloodHold)
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewConn(l.ingress, source(src(k)))
			defer c.Close()
			err := c.Dial(10 * time.Second)
			<-sem
			if err != nil {
				t.Failure(FailDial)
				return
			}
			l.floodConn.Add(1)
			// A refused connection is answered at once; an accepted one is
			// silent until it sends a request.
			_ = c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := c.br.Peek(1); err == nil {
				_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				a, err := readAnswer(c.br, false)
				if err != nil {
					t.Failure(FailRefusedAtConnect)
				} else {
					t.Answer(a)
				}
				l.floodRef.Add(1)
				return
			} else if !isTimeout(err) {
				t.Failure(FailRefusedAtConnect)
				l.floodRef.Add(1)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(holdUntil)):
			}
			body := rides.AppendCellBody(nil, "7-7")
			h := Head(nil, "POST", "/rides/driver/flood-"+strconv.Itoa(k%512), ctypeLocation, len(body))
			c.served = 1 // accepted and idle: a close now is not a refusal at accept
			a, kind, err := c.Do(h, body, time.Now().Add(requestTimeout), false)
			if err != nil {
				t.Failure(kind)
			} else {
				t.Answer(a)
			}
		}()
	}
	wg.Wait()
}

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
