package remote

import "github.com/prometheus/client_golang/prometheus"

// metrics are the client's Prometheus collectors; every series is labelled
// with the endpoint pattern ("ns/name" or "ns/*").
type metrics struct {
	requests     *prometheus.CounterVec   // endpoint, outcome
	badResponses *prometheus.CounterVec   // endpoint, reason
	retries      *prometheus.CounterVec   // endpoint
	batches      *prometheus.CounterVec   // endpoint, result
	splits       *prometheus.CounterVec   // endpoint
	latency      *prometheus.HistogramVec // endpoint
	inflight     *prometheus.GaugeVec     // endpoint
	queued       *prometheus.GaugeVec     // endpoint
	failures     *prometheus.CounterVec   // endpoint, reason
	stuck        *prometheus.GaugeVec     // endpoint
	retrying     *prometheus.GaugeVec     // endpoint
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_requests_total",
			Help: "HTTP attempts to remote functions by outcome (ok, http_error, network, timeout, bad_response).",
		}, []string{"endpoint", "outcome"}),
		badResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_bad_responses_total",
			Help: "Remote function responses rejected by validation, by reason.",
		}, []string{"endpoint", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_retries_total",
			Help: "Retried attempts of remote function requests.",
		}, []string{"endpoint"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_batches_total",
			Help: "Remote invocation batches by result (ok, incomplete, failed = dead-lettered, abandoned = left for the next start by a closing engine).",
		}, []string{"endpoint", "result"}),
		splits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_split_requests_total",
			Help: "Sub-requests sent because a batch exceeded the per-request byte budget.",
		}, []string{"endpoint"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardfn_remote_request_seconds",
			Help:    "Latency of one HTTP attempt to a remote function, up to the full response body.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"endpoint"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardfn_remote_inflight",
			Help: "HTTP attempts to remote functions in flight.",
		}, []string{"endpoint"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardfn_remote_queued",
			Help: "Remote batches waiting for the endpoint's concurrency limit or a pool worker.",
		}, []string{"endpoint"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_remote_failures_total",
			Help: "Failed attempts by reason: connect, timeout, network, http_408, http_429, http_5xx (retried), http_4xx, bad_response (dead-lettered at once).",
		}, []string{"endpoint", "reason"}),
		stuck: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardfn_remote_stuck",
			Help: "1 while the endpoint is stuck: a batch has been failing for Options.StuckAfter or longer and is being retried.",
		}, []string{"endpoint"}),
		retrying: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardfn_remote_retrying_batches",
			Help: "Remote batches that have failed at least once and wait for, or run, their next attempt.",
		}, []string{"endpoint"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.badResponses, m.retries, m.batches, m.splits, m.latency, m.inflight, m.queued, m.failures, m.stuck, m.retrying}
}
