package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Routes, as the "route" label of the ingress metrics.
const (
	routeSend    = "send"    // POST /{ns}/{type}/{id}
	routeRequest = "request" // POST /{ns}/{type}/{id}?wait=
	routeBatch   = "batch"   // POST /batch
	routeEgress  = "egress"  // GET /egress/{name}
	routeOther   = "other"   // anything else (404, 405, unparsable)
)

var allRoutes = []string{routeSend, routeRequest, routeBatch, routeEgress, routeOther}

// commonCodes get pre-resolved counters so that counting does not allocate.
var commonCodes = []int{200, 202, 400, 404, 405, 408, 413, 431, 500, 503, 504, 505}

type routeCode struct {
	route string
	code  int
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge

	conns        prometheus.Gauge
	connsRefused *prometheus.CounterVec
	acceptErrors *prometheus.CounterVec
	bodyHeld     prometheus.GaugeFunc
	egressBusy   prometheus.Counter

	counters  map[routeCode]prometheus.Counter // read-only after newMetrics
	observers map[string]prometheus.Observer   // read-only after newMetrics
}

func newMetrics(bodyHeld func() float64) *metrics {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardfn_ingress_connections",
			Help: "Ingress connections open now (within --max-conns).",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_ingress_connections_refused_total",
			Help: "Ingress connections answered 503 and closed at accept, by the limit reached: total (--max-conns) or per_client (--max-conns-per-client).",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_ingress_accept_errors_total",
			Help: "Failed accepts on the ingress listener, retried after a back-off, by cause: emfile (process file limit), enfile (system file limit), other.",
		}, []string{"reason"}),
		bodyHeld: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shardfn_ingress_body_bytes_held",
			Help: "Bytes of request bodies held by the ingress now (within --max-body-in-flight).",
		}, bodyHeld),
		egressBusy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardfn_ingress_egress_busy_total",
			Help: "Egress reads answered 503 because --max-egress-reads answers were being built.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_ingress_requests_total",
			Help: "Ingress HTTP requests answered, by status code and route.",
		}, []string{"code", "route"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardfn_ingress_request_duration_seconds",
			Help:    "Time from the start of handling an ingress request to its answer (includes waiting for durability and replies), by route.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 19), // 50µs .. ~13s
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardfn_ingress_in_flight_requests",
			Help: "Ingress requests being handled now.",
		}),
		counters:  make(map[routeCode]prometheus.Counter),
		observers: make(map[string]prometheus.Observer),
	}
	for _, r := range allRoutes {
		m.observers[r] = m.latency.WithLabelValues(r)
		for _, c := range commonCodes {
			m.counters[routeCode{r, c}] = m.requests.WithLabelValues(strconv.Itoa(c), r)
		}
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.inFlight, m.conns, m.connsRefused, m.acceptErrors, m.bodyHeld, m.egressBusy} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	if c, ok := m.counters[routeCode{route, code}]; ok {
		c.Inc()
	} else {
		m.requests.WithLabelValues(strconv.Itoa(code), route).Inc()
	}
	m.observers[route].Observe(d.Seconds())
}
