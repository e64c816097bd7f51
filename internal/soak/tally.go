package soak

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Shape names: each hostile or normal request shape of the soak, counted
// apart (issue 10's list).
const (
	ShapeLocation    = "location"     // RS-1 location writes, one message each (tracked drivers)
	ShapeBatch       = "batch"        // RS-1 location writes in /batch (tracked drivers)
	ShapeFill        = "fill"         // rides/touch batches to fresh passengers: fill the state cache
	ShapeWarmUp      = "warm_up"      // the same in closed loop before the calibration, until the cache is nearly full
	ShapeRequest     = "request"      // ride requests with ?wait= (request-reply)
	ShapeFanIn       = "fan_in"       // drivers all joining one geocell
	ShapeBigBody     = "big_body"     // concurrent near---max-body POSTs
	ShapeEgress      = "egress"       // parallel GET /egress/dead-letters of big records
	ShapeDeadLetter  = "dead_letter"  // seeding: big bodies a function fails on
	ShapeFlood       = "flood"        // connections up to and beyond --max-conns
	ShapeFloodClient = "flood_client" // connections beyond --max-conns-per-client from one address
	ShapeSlowHeader  = "slow_header"  // headers trickled byte by byte
	ShapeSlowBody    = "slow_body"    // a body trickled byte by byte
	ShapeHalfOpen    = "half_open"    // a partial request, never finished
	ShapeBadInput    = "bad_input"    // malformed requests: 4xx expected
	ShapeHTTP99      = "http_9_9"     // HTTP/9.9: 505 by design
	ShapeProbe       = "probe"        // the well-behaved probe client
)

// Tally counts the answers of every shape: status codes, 503s without
// Retry-After, and requests that got no answer by failure kind. Safe for
// concurrent use.
type Tally struct {
	mu     sync.Mutex
	shapes map[string]*ShapeTally
}

// ShapeTally is one shape's counts.
type ShapeTally struct {
	codes       [600]atomic.Int64
	noRetry503  atomic.Int64
	failures    sync.Map // kind -> *atomic.Int64
	bytesSent   atomic.Int64
	bytesRecv   atomic.Int64
	messagesOut atomic.Int64 // messages sent (a batch counts its lines)
	messagesAck atomic.Int64 // messages acknowledged (2xx)
	ackLatency  [latBuckets]atomic.Int64
}

// latBuckets are the buckets of acknowledged answers' latency: bucket i
// holds latencies below 1ms x 2^i (the last one, all longer ones).
const latBuckets = 18

// Acked records the latency of an acknowledged (2xx) answer.
func (s *ShapeTally) Acked(d time.Duration) {
	i := 0
	for i < latBuckets-1 && d >= time.Millisecond<<i {
		i++
	}
	s.ackLatency[i].Add(1)
}

// latencyQuantile is the upper bound of the bucket holding quantile q of
// the acknowledged answers (0 without any).
func latencyQuantile(b []int64, q float64) time.Duration {
	var n int64
	for _, v := range b {
		n += v
	}
	if n == 0 {
		return 0
	}
	want := int64(q*float64(n) + 0.999999)
	var c int64
	for i, v := range b {
		c += v
		if c >= want {
			return time.Millisecond << i
		}
	}
	return time.Millisecond << (len(b) - 1)
}

// NewTally returns an empty tally.
func NewTally() *Tally { return &Tally{shapes: map[string]*ShapeTally{}} }

// Shape returns the counts of a shape (made on first use).
func (t *Tally) Shape(name string) *ShapeTally {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.shapes[name]
	if s == nil {
		s = &ShapeTally{}
		t.shapes[name] = s
	}
	return s
}

// Answer records an HTTP answer.
func (s *ShapeTally) Answer(a Answer) {
	if a.Status >= 100 && a.Status < 600 {
		s.codes[a.Status].Add(1)
	} else {
		s.Failure(FailOther)
	}
	if a.Status == 503 && !a.RetryAfter {
		s.noRetry503.Add(1)
	}
}

// Exchange records the outcome of one request sent at t0: its answer (and,
// for a 2xx, its latency) or its failure of kind. It reports whether the
// answer was a 2xx.
func (s *ShapeTally) Exchange(a Answer, kind string, err error, t0 time.Time) bool {
	if err != nil {
		s.Failure(kind)
		return false
	}
	s.Answer(a)
	if a.Status/100 != 2 {
		return false
	}
	if !t0.IsZero() {
		s.Acked(time.Since(t0))
	}
	return true
}

// Failure records a request without an answer.
func (s *ShapeTally) Failure(kind string) {
	v, _ := s.failures.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// Messages records n messages sent, of which acked were acknowledged.
func (s *ShapeTally) Messages(n, acked int) {
	s.messagesOut.Add(int64(n))
	s.messagesAck.Add(int64(acked))
}

// Bytes records bytes sent and received.
func (s *ShapeTally) Bytes(sent, recv int) {
	s.bytesSent.Add(int64(sent))
	s.bytesRecv.Add(int64(recv))
}

// Counts is a snapshot of one shape.
type Counts struct {
	Shape       string
	Codes       map[int]int64
	NoRetry503  int64
	Failures    map[string]int64
	MessagesOut int64
	MessagesAck int64
	BytesSent   int64
	BytesRecv   int64
	AckLatency  []int64 // acknowledged answers by latency bucket (Acked)
}

// AckP50 and AckP99 are the latency quantiles of acknowledged answers (the
// upper bound of their power-of-two bucket).
func (c Counts) AckP50() time.Duration { return latencyQuantile(c.AckLatency, 0.50) }

// AckP99 is the 99th percentile; see AckP50.
func (c Counts) AckP99() time.Duration { return latencyQuantile(c.AckLatency, 0.99) }

// Answers is the number of HTTP answers.
func (c Counts) Answers() int64 {
	var n int64
	for _, v := range c.Codes {
		n += v
	}
	return n
}

// Failed is the number of requests without an answer.
func (c Counts) Failed() int64 {
	var n int64
	for _, v := range c.Failures {
		n += v
	}
	return n
}

// Snapshot returns every shape's counts, sorted by name.
func (t *Tally) Snapshot() []Counts {
	t.mu.Lock()
	names := make([]string, 0, len(t.shapes))
	for n := range t.shapes {
		names = append(names, n)
	}
	t.mu.Unlock()
	sort.Strings(names)
	out := make([]Counts, 0, len(names))
	for _, n := range names {
		s := t.Shape(n)
		c := Counts{Shape: n, Codes: map[int]int64{}, Failures: map[string]int64{}, NoRetry503: s.noRetry503.Load(),
			MessagesOut: s.messagesOut.Load(), MessagesAck: s.messagesAck.Load(),
			BytesSent: s.bytesSent.Load(), BytesRecv: s.bytesRecv.Load(), AckLatency: make([]int64, latBuckets)}
		for i := range s.ackLatency {
			c.AckLatency[i] = s.ackLatency[i].Load()
		}
		for code := range s.codes {
			if v := s.codes[code].Load(); v > 0 {
				c.Codes[code] = v
			}
		}
		s.failures.Range(func(k, v any) bool {
			c.Failures[k.(string)] = v.(*atomic.Int64).Load()
			return true
		})
		out = append(out, c)
	}
	return out
}
