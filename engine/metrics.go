package engine

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the engine's Prometheus metrics. Hot-path counters live in
// per-shard padded atomics (funcEntry.counts, shard.Stats) and are summed
// at scrape time by the collector below; only sampled latencies and rare
// events touch Prometheus objects directly.
type metrics struct {
	e              *Engine
	invokeDur      *prometheus.HistogramVec
	remoteDur      *prometheus.HistogramVec
	checkpoints    prometheus.Histogram
	deadLetters    prometheus.Counter
	overloaded     prometheus.Counter
	repliesDropped prometheus.Counter
	refusedBy      *prometheus.CounterVec
	slowTotal      prometheus.Counter
	slowNow        prometheus.Gauge
	walSync        prometheus.Histogram
	walBatch       prometheus.Histogram

	lastCheckpoint atomic.Int64 // unix ns of the last checkpoint's end, 0 before the first
}

func newMetrics(e *Engine) *metrics {
	return &metrics{
		e: e,
		invokeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardfn_invocation_duration_seconds",
			Help:    "Duration of embedded invocations (one in 32 sampled), by function type.",
			Buckets: prometheus.ExponentialBuckets(250e-9, 4, 12),
		}, []string{"function"}),
		remoteDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shardfn_remote_call_duration_seconds",
			Help:    "Duration of remote function batch calls, retries included, by function type.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 3, 12),
		}, []string{"function"}),
		checkpoints: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardfn_checkpoint_duration_seconds",
			Help:    "Duration of checkpoints.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 3, 10),
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardfn_dead_letters_total",
			Help: "Messages sent to the dead-letters egress because their invocation failed for good.",
		}),
		walSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardfn_wal_sync_duration_seconds",
			Help:    "Time spent in fdatasync per group-commit batch.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}),
		walBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shardfn_wal_batch_bytes",
			Help:    "Bytes written per group-commit batch (one write and one fdatasync).",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10),
		}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardfn_ingress_overloaded_total",
			Help: "Ingress messages refused under pressure (ErrOverloaded: a full mailbox, too many queued bytes, a state cache past its budget, or the store too far behind the log).",
		}),
		refusedBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardfn_ingress_refused_total",
			Help: "Ingress messages refused under pressure (ErrOverloaded), by the bound that was reached: mailbox, queued_bytes, state_cache, applier_lag.",
		}, []string{"reason"}),
		slowTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardfn_slow_invocations_total",
			Help: "Invocations that ran longer than the slow-invocation limit (counted when they pass it).",
		}),
		slowNow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardfn_slow_invocations",
			Help: "Invocations running longer than the slow-invocation limit now (each holds its shard).",
		}),
		repliesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardfn_replies_dropped_total",
			Help: "Replies released with no request waiting for them (timed out, or made before a restart).",
		}),
	}
}

func (m *metrics) observeInvoke(fe *funcEntry, d time.Duration) {
	m.invokeDur.WithLabelValues(fe.name).Observe(d.Seconds())
}

func (m *metrics) observeRemote(fe *funcEntry, d time.Duration) {
	m.remoteDur.WithLabelValues(fe.name).Observe(d.Seconds())
}

// refused counts a refusal under pressure.
func (m *metrics) refused(reason string) {
	m.overloaded.Inc()
	m.refusedBy.WithLabelValues(reason).Inc()
}

func (m *metrics) checkpoint(d time.Duration) {
	m.checkpoints.Observe(d.Seconds())
	m.lastCheckpoint.Store(time.Now().UnixNano()) // read by Status
}

// walFlush is called by the log's flusher after each batch.
func (m *metrics) walFlush(bytes int, sync time.Duration) {
	m.walBatch.Observe(float64(bytes))
	m.walSync.Observe(sync.Seconds())
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.invokeDur, m.remoteDur, m.checkpoints, m.deadLetters, m.overloaded, m.refusedBy, m.repliesDropped, m.slowTotal, m.slowNow, m.walSync, m.walBatch, &scrape{m: m}}
}

// scrape gathers the per-shard counters at scrape time.
type scrape struct{ m *metrics }

var (
	descInvocations = prometheus.NewDesc("shardfn_invocations_total", "Invocations (messages processed), by function type.", []string{"function"}, nil)
	descFailures    = prometheus.NewDesc("shardfn_invocation_failures_total", "Failed invocations (sent to dead letters), by function type.", []string{"function"}, nil)
	descMailbox     = prometheus.NewDesc("shardfn_mailbox_depth", "Envelopes waiting in a shard's mailbox.", []string{"shard"}, nil)
	descQueue       = prometheus.NewDesc("shardfn_queue_depth", "Messages queued at active instances of a shard.", []string{"shard"}, nil)
	descHits        = prometheus.NewDesc("shardfn_state_cache_hits_total", "State cache hits.", []string{"shard"}, nil)
	descMisses      = prometheus.NewDesc("shardfn_state_cache_misses_total", "State cache misses (loads from the store).", []string{"shard"}, nil)
	descEvictions   = prometheus.NewDesc("shardfn_state_cache_evictions_total", "State cache evictions.", []string{"shard"}, nil)
	descCacheBytes  = prometheus.NewDesc("shardfn_state_cache_bytes", "Live bytes in the state cache.", []string{"shard"}, nil)
	descCacheCap    = prometheus.NewDesc("shardfn_state_cache_capacity_bytes", "State cache capacity.", []string{"shard"}, nil)
	descQueued      = prometheus.NewDesc("shardfn_queued_bytes", "Bytes of messages a shard holds: queued at instances, in remote calls, waiting for a peer, delayed (the bound of Options.MaxQueuedBytes).", []string{"shard"}, nil)
	descTimers      = prometheus.NewDesc("shardfn_delayed_messages", "Pending delayed messages held by a shard.", []string{"shard"}, nil)
	descBatches     = prometheus.NewDesc("shardfn_wal_appends_total", "Record batches appended to the log by a shard.", []string{"shard"}, nil)
	descRecords     = prometheus.NewDesc("shardfn_wal_records_total", "Effect records appended to the log by a shard.", []string{"shard"}, nil)
	descDurable     = prometheus.NewDesc("shardfn_wal_durable_position_bytes", "Log position up to which the log is durable (bytes written since the log began).", nil, nil)
	descApplied     = prometheus.NewDesc("shardfn_store_applied_position_bytes", "Log position up to which the store has applied the log.", nil, nil)
	descRecovery    = prometheus.NewDesc("shardfn_recovery_duration_seconds", "Duration of the last recovery (Open).", nil, nil)
	descReplayed    = prometheus.NewDesc("shardfn_recovery_replayed_bytes", "Log bytes replayed by the last recovery.", nil, nil)
	descFailed      = prometheus.NewDesc("shardfn_failed", "1 when the engine is in failed-stop.", nil, nil)
	descLastCkpt    = prometheus.NewDesc("shardfn_last_checkpoint_timestamp_seconds", "Unix time at which the last checkpoint of this process ended (0 before the first).", nil, nil)
	descStore       = prometheus.NewDesc("shardfn_store_metric", "Store (Pebble) metrics, by name.", []string{"name"}, nil)
)

func (s *scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInvocations, descFailures, descMailbox, descQueue, descHits, descMisses,
		descEvictions, descCacheBytes, descCacheCap, descQueued, descTimers, descBatches, descRecords, descDurable, descApplied,
		descRecovery, descReplayed, descFailed, descLastCkpt, descStore} {
		ch <- d
	}
}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	e := s.m.e
	for _, fe := range e.reg.entries() {
		var n, f uint64
		for i := range fe.counts {
			n += fe.counts[i].n.Load()
			f += fe.fails[i].n.Load()
		}
		ch <- prometheus.MustNewConstMetric(descInvocations, prometheus.CounterValue, float64(n), fe.name)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(f), fe.name)
	}
	for i, sh := range e.shards {
		st := sh.Stats()
		l := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(descMailbox, prometheus.GaugeValue, float64(st.Mailbox), l)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(st.QueueDepth), l)
		ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(st.Arena.Hits), l)
		ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(st.Arena.Misses), l)
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(st.Arena.Evictions), l)
		ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(st.Arena.Bytes), l)
		ch <- prometheus.MustNewConstMetric(descCacheCap, prometheus.GaugeValue, float64(st.Arena.Capacity), l)
		ch <- prometheus.MustNewConstMetric(descTimers, prometheus.GaugeValue, float64(st.Timers), l)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(sh.QueuedBytes()), l)
		ch <- prometheus.MustNewConstMetric(descBatches, prometheus.CounterValue, float64(st.Batches), l)
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(st.Records), l)
	}
	ch <- prometheus.MustNewConstMetric(descDurable, prometheus.GaugeValue, float64(e.wal.Durable()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(e.ap.applied.Load()))
	ch <- prometheus.MustNewConstMetric(descRecovery, prometheus.GaugeValue, e.recovery.Duration.Seconds())
	ch <- prometheus.MustNewConstMetric(descReplayed, prometheus.GaugeValue, float64(e.recovery.Bytes))
	failed := 0.0
	if e.Err() != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, failed)
	ch <- prometheus.MustNewConstMetric(descLastCkpt, prometheus.GaugeValue, float64(s.m.lastCheckpoint.Load())/1e9)
	if !e.closed.Load() {
		for k, v := range e.st.Metrics() {
			ch <- prometheus.MustNewConstMetric(descStore, prometheus.GaugeValue, v, k)
		}
	}
}
