package soak

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/internal/memmodel"
)

func TestParseProcStatus(t *testing.T) {
	st := "Name:\tengine\nVmPeak:\t 3357804 kB\nVmHWM:\t  965000 kB\nVmRSS:\t  964364 kB\nThreads:\t17\n"
	p, err := ParseProcStatus([]byte(st))
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS != 964364<<10 || p.HWM != 965000<<10 || p.Threads != 17 {
		t.Fatalf("parsed %+v", p)
	}
	for _, bad := range []string{
		"Name:\tengine\n",           // no VmRSS
		"VmRSS:\t 12 MB\n",          // unit
		"VmRSS:\t x kB\n",           // number
		"VmRSS:\t 12 kB\nVmHWM: -1", // HWM malformed
	} {
		if _, err := ParseProcStatus([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPeakRSS(t *testing.T) {
	p, at := PeakRSS([]RSSSample{{time.Second, 10}, {2 * time.Second, 30}, {3 * time.Second, 20}})
	if p != 30 || at != 2*time.Second {
		t.Fatalf("peak %d at %v", p, at)
	}
}

func TestDriverTrack(t *testing.T) {
	var d driverTrack
	if !d.allowed("") {
		t.Fatal("a driver never written may be absent")
	}
	d.record("1-1", outcomeRefused)
	if d.allowed("1-1") {
		t.Fatal("a refused write was allowed")
	}
	d.record("1-2", outcomeAcked)
	d.record("1-3", outcomeDoubt)
	d.record("1-4", outcomeRefused)
	for _, c := range []struct {
		got string
		ok  bool
	}{{"1-2", true}, {"1-3", true}, {"1-4", false}, {"1-1", false}, {"", false}} {
		if d.allowed(c.got) != c.ok {
			t.Errorf("allowed(%q) = %v", c.got, !c.ok)
		}
	}
	if got := classify(Answer{Status: 503, RetryAfter: true}, false); got != outcomeRefused {
		t.Error("503 with Retry-After is a refusal")
	}
	if got := classify(Answer{Status: 503}, false); got != outcomeDoubt {
		t.Error("503 without Retry-After is in doubt")
	}
	if got := classify(Answer{}, true); got != outcomeDoubt {
		t.Error("no answer is in doubt")
	}
	if got := classify(Answer{Status: 202}, false); got != outcomeAcked {
		t.Error("202 is acknowledged")
	}
	// Consecutive writes of a driver go to different cells.
	seen := map[string]bool{}
	for n := range int32(600) {
		c := cellFor(3, 7, n)
		if seen[c] {
			t.Fatalf("write %d repeats cell %s", n, c)
		}
		seen[c] = true
	}
}

// passing is a summary that meets every criterion.
func passing() *Summary {
	c := Config{}
	c.EnsureDefaults()
	return &Summary{
		Config: c, Budget: 128 << 20, Bound: 1 << 30, PeakRSS: 500 << 20, HWM: 510 << 20,
		Sustainable: 1000, Offered: 10500, Target: 10000,
		Counts: []Counts{
			{Shape: ShapeLocation, Codes: map[int]int64{202: 10, 503: 5}},
			{Shape: ShapeBadInput, Codes: map[int]int64{400: 3, 404: 1, 413: 1, 431: 1}},
			{Shape: ShapeHTTP99, Codes: map[int]int64{505: 3}},
			{Shape: ShapeRequest, Codes: map[int]int64{200: 3, 504: 2}},
			{Shape: ShapeFlood, Codes: map[int]int64{503: 3}, Failures: map[string]int64{FailRefusedAtConnect: 4}},
			{Shape: ShapeSlowHeader, Codes: map[int]int64{408: 3}, Failures: map[string]int64{FailClosed: 1}},
		},
		Probe:        ProbeStats{Writes: 100, Acked: 90, Refused: 10, P50: 10 * time.Millisecond, P99: time.Second},
		StopSeconds:  1,
		TrackedAcked: 5, TrackedDrivers: 6, ProbeChecked: 90,
	}
}

func TestVerdictPasses(t *testing.T) {
	cs := Verdict(passing())
	if !Passed(cs) {
		for _, c := range cs {
			t.Logf("%v %s: %s", c.Pass, c.Name, c.Detail)
		}
		t.Fatal("a passing run failed")
	}
}

// TestVerdictFailsEachCriterion breaks each criterion in turn: the checker
// must name it.
func TestVerdictFailsEachCriterion(t *testing.T) {
	for _, c := range []struct {
		name   string
		crit   string
		break_ func(s *Summary)
	}{
		{"rss over the bound", "1.", func(s *Summary) { s.PeakRSS = s.Bound + 1 }},
		{"hwm over the bound", "1.", func(s *Summary) { s.HWM = s.Bound + 1 }},
		{"no rss samples", "1.", func(s *Summary) { s.PeakRSS, s.HWM = 0, 0 }},
		{"a 500", "2.", func(s *Summary) { s.Counts[0].Codes[500] = 1 }},
		{"a 400 to a well-formed write", "2.", func(s *Summary) { s.Counts[0].Codes[400] = 1 }},
		{"503 without Retry-After", "2.", func(s *Summary) { s.Counts[0].NoRetry503 = 1 }},
		{"505 outside HTTP/9.9", "2.", func(s *Summary) { s.Counts[0].Codes[505] = 1 }},
		{"504 outside request-reply", "2.", func(s *Summary) { s.Counts[0].Codes[504] = 1 }},
		{"a timeout", "2.", func(s *Summary) { s.Counts[0].Failures = map[string]int64{FailTimeout: 1} }},
		{"a normal request closed", "2.", func(s *Summary) { s.Counts[0].Failures = map[string]int64{FailClosed: 1} }},
		{"HTTP/9.9 not 505", "2.", func(s *Summary) { s.Counts[2].Codes = map[int]int64{202: 1} }},
		{"probe failure", "3.", func(s *Summary) { s.Probe.Failed = 1 }},
		{"probe unexpected answer", "3.", func(s *Summary) { s.Probe.Unexpected = 1 }},
		{"probe p99", "3.", func(s *Summary) { s.Probe.P99 = s.Config.ProbeP99Bound + time.Millisecond }},
		{"no probe", "3.", func(s *Summary) { s.Probe.Writes = 0 }},
		{"lost write", "4.", func(s *Summary) { s.Lost = []string{"d-1-1"} }},
		{"probe lost", "4.", func(s *Summary) { s.ProbeLost = []string{"probe-1"} }},
		{"probe key", "4.", func(s *Summary) { s.ProbeKeyMismatch = []string{"k"} }},
		{"slow stop", "4.", func(s *Summary) { s.StopErr = "did not exit" }},
		{"restart", "4.", func(s *Summary) { s.RestartErr = "exited" }},
		{"nothing acknowledged", "4.", func(s *Summary) { s.TrackedAcked = 0 }},
		{"engine exited", "5.", func(s *Summary) { s.EngineExited = "exit status 1" }},
		{"too little load", "6.", func(s *Summary) { s.Offered = s.Target - 1 }},
	} {
		s := passing()
		c.break_(s)
		cs := Verdict(s)
		if Passed(cs) {
			t.Errorf("%s: passed", c.name)
			continue
		}
		for _, k := range cs {
			if !k.Pass && !strings.HasPrefix(k.Name, c.crit) {
				t.Errorf("%s: criterion %q failed too", c.name, k.Name)
			}
			if !k.Pass && k.Detail == "" {
				t.Errorf("%s: no detail", c.name)
			}
		}
	}
}

func TestProbeStats(t *testing.T) {
	var rs []ProbeResult
	for i := range 100 {
		r := ProbeResult{At: time.Duration(i) * 100 * time.Millisecond, Latency: time.Duration(i+1) * time.Millisecond, Status: 202}
		switch i {
		case 10:
			r.Status, r.Retry = 503, true
		case 20:
			r.Status, r.Fail = 0, FailTimeout
		case 30:
			r.Status = 500
		}
		rs = append(rs, r)
	}
	s := probeStats(rs, 10*time.Second)
	if s.Writes != 100 || s.Acked != 97 || s.Refused != 1 || s.Failed != 1 || s.Unexpected != 1 {
		t.Fatalf("counts %+v", s)
	}
	if s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Fatalf("latency p50 %v p99 %v max %v", s.P50, s.P99, s.Max)
	}
}

// TestReadAnswer reads the answers the server writes, including 100
// Continue (no body) and a refusal at accept.
func TestReadAnswer(t *testing.T) {
	in := "HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 11\r\n\r\n{\"error\":1}" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	a, err := ReadAnswer(br, true)
	if err != nil || a.Status != 100 {
		t.Fatalf("100: %+v %v", a, err)
	}
	a, err = ReadAnswer(br, true)
	if err != nil || a.Status != 503 || !a.RetryAfter || !a.Close || string(a.Body) != `{"error":1}` {
		t.Fatalf("503: %+v %v", a, err)
	}
	a, err = ReadAnswer(br, true)
	if err != nil || a.Status != 200 || string(a.Body) != "abc" {
		t.Fatalf("chunked: %+v %v", a, err)
	}
	if _, err := ReadAnswer(bufio.NewReader(strings.NewReader("garbage\r\n\r\n")), false); err == nil {
		t.Fatal("garbage read as an answer")
	}
}

// TestConnRefusedAtAccept: a server that answers 503 at accept and closes
// (as httpapi's limiter does) is read as a 503 with Retry-After.
func TestConnRefusedAtAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}()
	c := NewConn(ln.Addr().String(), nil)
	body := []byte(`{"cell":"1-1"}`)
	a, kind, err := c.Do(Head(nil, "POST", "/rides/driver/x", ctypeLocation, len(body)), body, time.Now().Add(5*time.Second), false)
	if err != nil {
		if kind != FailRefusedAtConnect {
			t.Fatalf("kind %s: %v", kind, err)
		}
		return // the reset won the race: counted as a refusal at accept
	}
	if a.Status != 503 || !a.RetryAfter {
		t.Fatalf("answer %+v", a)
	}
}

// TestBoundFromConfig: the soak's bound is the memory model's for its
// flags, and it grows with each limit.
func TestBoundFromConfig(t *testing.T) {
	c := Config{}
	c.EnsureDefaults()
	b := memmodel.Bound(c.Params())
	if b <= c.MemoryBudget {
		t.Fatalf("bound %d not above the budget %d", b, c.MemoryBudget)
	}
	c2 := c
	c2.MaxConns *= 2
	c3 := c
	c3.MaxBodyInFlight *= 2
	if memmodel.Bound(c2.Params()) <= b || memmodel.Bound(c3.Params()) <= b {
		t.Fatal("the bound does not grow with --max-conns and --max-body-in-flight")
	}
}

// TestTally counts answers, 503s without Retry-After, failures, messages
// and latency buckets per shape, from many goroutines.
func TestTally(t *testing.T) {
	tl := NewTally()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := tl.Shape(ShapeBatch)
			for range 100 {
				s.Answer(Answer{Status: 202})
				s.Acked(3 * time.Millisecond) // bucket < 4 ms
				s.Answer(Answer{Status: 503, RetryAfter: true})
				s.Answer(Answer{Status: 503})
				s.Failure(FailTimeout)
				s.Messages(500, 250)
			}
		}()
	}
	wg.Wait()
	tl.Shape(ShapeProbe).Answer(Answer{Status: 999}) // not a status: a failure
	tl.Shape(ShapeProbe).Acked(100 * time.Hour)      // the last bucket
	cs := tl.Snapshot()
	if len(cs) != 2 || cs[0].Shape != ShapeBatch || cs[1].Shape != ShapeProbe {
		t.Fatalf("shapes %+v", cs)
	}
	b := cs[0]
	if b.Codes[202] != 800 || b.Codes[503] != 1600 || b.NoRetry503 != 800 || b.Answers() != 2400 ||
		b.Failures[FailTimeout] != 800 || b.Failed() != 800 || b.MessagesOut != 400000 || b.MessagesAck != 200000 {
		t.Fatalf("batch counts %+v", b)
	}
	if b.AckP50() != 4*time.Millisecond || b.AckP99() != 4*time.Millisecond {
		t.Fatalf("batch latency p50 %v p99 %v, want the 4 ms bucket", b.AckP50(), b.AckP99())
	}
	p := cs[1]
	if p.Answers() != 0 || p.Failures[FailOther] != 1 || p.AckP99() != time.Millisecond<<(latBuckets-1) {
		t.Fatalf("probe counts %+v, p99 %v", p, p.AckP99())
	}
	if (Counts{AckLatency: make([]int64, latBuckets)}).AckP50() != 0 {
		t.Fatal("latency without answers")
	}
}

// TestExchange: a failure counts its kind, any answer its code, and only a
// 2xx reports true and (with a start time) its latency.
func TestExchange(t *testing.T) {
	var s ShapeTally
	if s.Exchange(Answer{}, FailOther, errors.New("reset"), time.Now()) {
		t.Fatal("a failure counted as acknowledged")
	}
	if s.Exchange(Answer{Status: 503, RetryAfter: true}, "", nil, time.Now()) {
		t.Fatal("a 503 counted as acknowledged")
	}
	if !s.Exchange(Answer{Status: 202}, "", nil, time.Now()) || !s.Exchange(Answer{Status: 200}, "", nil, time.Time{}) {
		t.Fatal("a 2xx not counted as acknowledged")
	}
	var lat int64
	for i := range s.ackLatency {
		lat += s.ackLatency[i].Load()
	}
	if s.codes[503].Load() != 1 || s.codes[202].Load() != 1 || s.codes[200].Load() != 1 || lat != 1 {
		t.Fatalf("codes 503 %d, 202 %d, 200 %d; latencies %d", s.codes[503].Load(), s.codes[202].Load(), s.codes[200].Load(), lat)
	}
	v, ok := s.failures.Load(FailOther)
	if !ok || v.(*atomic.Int64).Load() != 1 {
		t.Fatal("the failure was not counted")
	}
}
