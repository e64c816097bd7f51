package kafka

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Metrics are the Prometheus metrics of the Kafka ingresses and egresses
// of one engine.
type Metrics struct {
	consumed     *prometheus.CounterVec
	lag          *prometheus.GaugeVec
	pauses       *prometheus.CounterVec
	overloaded   *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	fetchErrors  *prometheus.CounterVec
	commitErrors *prometheus.CounterVec

	produced      *prometheus.CounterVec
	shipLag       *prometheus.GaugeVec
	shipped       *prometheus.GaugeVec
	commitLatency *prometheus.HistogramVec
	aborts        *prometheus.CounterVec
	produceErrors *prometheus.CounterVec
}

// NewMetrics makes the metrics; register them with Collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_consumed_records_total",
			Help: "Kafka records consumed by an ingress and durable in the engine (their messages' invocations or dead letters are durable), per topic."}, []string{"ingress", "topic"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shardfn_kafka_consumer_lag_records",
			Help: "Records between a partition's high watermark and the last record durable in the engine."}, []string{"ingress", "topic", "partition"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_fetch_pauses_total",
			Help: "Times an ingress stopped polling (so fetching) because the records it fetched and the engine had not yet made durable reached the bound."}, []string{"ingress"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_ingress_overloaded_total",
			Help: "Batches an ingress retried because the engine's mailboxes were full (ErrOverloaded)."}, []string{"ingress"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_dead_letters_total",
			Help: "Kafka records (ingress) or egress records that went to the dead-letters egress."}, []string{"component", "topic"}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_fetch_errors_total",
			Help: "Fetch errors of an ingress."}, []string{"ingress", "topic"}),
		commitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_group_commit_errors_total",
			Help: "Failed group offset commits of an ingress (monitoring only: the engine keeps the positions)."}, []string{"ingress"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_produced_records_total",
			Help: "Egress records shipped to Kafka (committed, for exactly-once), per topic."}, []string{"egress", "topic"}),
		shipLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shardfn_kafka_egress_lag_records",
			Help: "Durable egress records not yet shipped to Kafka."}, []string{"egress"}),
		shipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shardfn_kafka_egress_shipped_offset",
			Help: "Next egress log offset to ship (every record before it is in Kafka)."}, []string{"egress"}),
		commitLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "shardfn_kafka_transaction_commit_seconds",
			Help:    "Time to commit one egress transaction (offsets and EndTxn; exactly-once) or to acknowledge one batch (at-least-once).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"egress"}),
		aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_transaction_aborts_total",
			Help: "Egress batches not shipped (transaction aborted or produce failed); they are shipped again."}, []string{"egress"}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shardfn_kafka_produce_errors_total",
			Help: "Egress errors talking to Kafka (produce, transaction, offsets), retried with backoff."}, []string{"egress"}),
	}
}

// Collectors returns every metric, for prometheus.Registerer.Register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.consumed, m.lag, m.pauses, m.overloaded, m.deadLetters, m.fetchErrors, m.commitErrors,
		m.produced, m.shipLag, m.shipped, m.commitLatency, m.aborts, m.produceErrors}
}

// kgoLogger sends franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	k.l.Log(context.Background(), lv, "kafka client: "+msg, kv...)
}
