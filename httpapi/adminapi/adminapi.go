// Package adminapi holds the JSON answers of the admin listener that a
// client decodes (the shardfn CLI), so that the server that writes them and
// the client that reads them share one definition. It has no behaviour and
// imports nothing of shardfn.
package adminapi

import "time"

// Status is GET /admin/status's answer.
type Status struct {
	Ready           bool   `json:"ready"`
	Failed          string `json:"failed,omitempty"`
	Shards          int    `json:"shards"`
	IngressMessages uint64 `json:"ingress_messages"`
	Processed       uint64 `json:"processed"`
	Invocations     uint64 `json:"invocations"`
	Failures        uint64 `json:"failures"`
	// Rates is nil until the server has sampled its totals twice (a
	// second after the engine opened).
	Rates      *Rates       `json:"rates,omitempty"`
	Log        Log          `json:"log"`
	Checkpoint Checkpoint   `json:"checkpoint"`
	Recovery   Recovery     `json:"recovery"`
	PerShard   []ShardStats `json:"per_shard"`
}

// Rates are the totals' rates over the server's last sampling window.
type Rates struct {
	WindowSeconds float64 `json:"window_seconds"`
	Ingress       float64 `json:"ingress_messages_per_second"`
	Processed     float64 `json:"processed_per_second"`
	Invocations   float64 `json:"invocations_per_second"`
	Failures      float64 `json:"failures_per_second"`
}

// Log is the write-ahead log's durable position, the store's applied
// position and the applier's lag between them, in bytes.
type Log struct {
	Durable    uint64 `json:"durable_position"`
	Applied    uint64 `json:"applied_position"`
	ApplierLag uint64 `json:"applier_lag_bytes"`
}

// Checkpoint is the last checkpoint (Last and AgeSeconds are nil before
// the first) and the checkpoint period.
type Checkpoint struct {
	Last            *time.Time `json:"last,omitempty"`
	AgeSeconds      *float64   `json:"age_seconds,omitempty"`
	IntervalSeconds float64    `json:"interval_seconds"`
}

// Recovery is what the last recovery replayed and restored.
type Recovery struct {
	DurationSeconds  float64 `json:"duration_seconds"`
	ReplayedRecords  uint64  `json:"replayed_records"`
	ReplayedBytes    uint64  `json:"replayed_bytes"`
	RestoredInFlight int     `json:"restored_in_flight"`
	RestoredTimers   int     `json:"restored_timers"`
}

// ShardStats are one shard's figures.
type ShardStats struct {
	Index           int    `json:"index"`
	Mailbox         int    `json:"mailbox"`
	QueueDepth      int64  `json:"queue_depth"`
	DelayedMessages int64  `json:"delayed_messages"`
	Invocations     uint64 `json:"invocations"`
	Failures        uint64 `json:"failures"`
	LogAppends      uint64 `json:"log_appends"`
	LogRecords      uint64 `json:"log_records"`
	CacheHits       uint64 `json:"cache_hits"`
	CacheMisses     uint64 `json:"cache_misses"`
	CacheEvictions  uint64 `json:"cache_evictions"`
	CacheBytes      int64  `json:"cache_bytes"`
	CacheCapacity   int64  `json:"cache_capacity_bytes"`
}
