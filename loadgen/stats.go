package loadgen

import (
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Event kinds.
const (
	KindLocation = "location"
	KindRequest  = "request"
)

var kinds = [...]string{KindLocation, KindRequest}

const (
	histMinUs = 1
	histMaxUs = 120_000_000 // two minutes
	histSig   = 3
	stripes   = 16
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUs, histMaxUs, histSig) }

// recorder collects latencies per kind in striped HDR histograms (one
// mutex per stripe, so workers rarely contend) plus error counters. Safe
// for concurrent use.
type recorder struct {
	stripes [stripes]struct {
		sync.Mutex
		h [len(kinds)]*hdrhistogram.Histogram
		_ [64]byte
	}
	count  [len(kinds)]atomic.Int64
	errors [len(kinds)]atomic.Int64

	mu      sync.Mutex
	samples []string // first distinct error texts
}

func newRecorder() *recorder {
	r := &recorder{}
	for i := range r.stripes {
		for k := range kinds {
			r.stripes[i].h[k] = newHist()
		}
	}
	return r
}

func (r *recorder) record(stripe, kind int, d time.Duration) {
	us := d.Microseconds()
	if us < histMinUs {
		us = histMinUs
	}
	if us > histMaxUs {
		us = histMaxUs
	}
	s := &r.stripes[stripe%stripes]
	s.Lock()
	s.h[kind].RecordValue(us)
	s.Unlock()
	r.count[kind].Add(1)
}

func (r *recorder) fail(kind int, err error) {
	r.errors[kind].Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) >= 10 {
		return
	}
	msg := kinds[kind] + ": " + err.Error()
	for _, s := range r.samples {
		if s == msg {
			return
		}
	}
	r.samples = append(r.samples, msg)
}

// merged returns a merged copy of one kind's histogram.
func (r *recorder) merged(kind int) *hdrhistogram.Histogram {
	out := newHist()
	for i := range r.stripes {
		s := &r.stripes[i]
		s.Lock()
		out.Merge(s.h[kind])
		s.Unlock()
	}
	return out
}

func (r *recorder) totalErrors() int64 {
	var n int64
	for k := range kinds {
		n += r.errors[k].Load()
	}
	return n
}

// Latency summarises one kind's latency histogram; durations in ms.
type Latency struct {
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	PerS   float64 `json:"per_s"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	// Curve is the percentile spectrum for plots: (percentile, ms) pairs.
	Curve [][2]float64 `json:"-"`
}

func summarise(h *hdrhistogram.Histogram, errors int64, window time.Duration) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	l := Latency{Count: h.TotalCount(), Errors: errors}
	if window > 0 {
		l.PerS = float64(l.Count) / window.Seconds()
	}
	if l.Count == 0 {
		return l
	}
	l.MeanMs = h.Mean() / 1000
	l.P50Ms = ms(h.ValueAtQuantile(50))
	l.P90Ms = ms(h.ValueAtQuantile(90))
	l.P99Ms = ms(h.ValueAtQuantile(99))
	l.P999Ms = ms(h.ValueAtQuantile(99.9))
	l.MaxMs = ms(h.Max())
	for _, q := range []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100} {
		l.Curve = append(l.Curve, [2]float64{q, ms(h.ValueAtQuantile(q))})
	}
	return l
}
