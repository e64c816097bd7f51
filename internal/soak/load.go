package soak

import (
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

// singleShare is the share of single-message operations among the
// location senders' operations (the others are batches of BatchSize). An
// accepted single write holds its connection until it is durable, so under
// overload singles, not batches, keep the senders busy.
const singleShare = 0.25

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
		rng: rand.New(rand.NewPCG(uint64(l.cfg.Seed), uint64(w))), single: singleShare}
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
		t.Exchange(a, kind, err, t0)
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
	t.Exchange(a, kind, err, t0)
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
	return singleShare + (1-singleShare)*float64(min(l.cfg.BatchSize, l.cfg.DriversPerWorker))
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
