package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi/adminapi"
	"github.com/shardfn/shardfn/remote"
)

// OpsEngine is what the operator routes (/admin/..., state writes, the
// console) need of the engine besides Engine; *engine.Engine implements it.
// An Engine without these methods gets 501 on those routes.
type OpsEngine interface {
	Status() engine.Status
	Functions() []engine.FunctionInfo
	SetState(ctx context.Context, addr engine.Address, muts []engine.StateMutation) error
	Inspect(ctx context.Context, addr engine.Address, max int) (engine.InstanceInfo, error)
	DeadLetters(ctx context.Context, from uint64, max int) ([]engine.DeadLetter, error)
	ReplayDeadLetters(ctx context.Context, from, to uint64) (engine.ReplayResult, error)
}

var _ OpsEngine = (*engine.Engine)(nil)

// maxAdminBody bounds the body of an admin write (a state repair).
const maxAdminBody = 16 << 20

func (s *Server) ops(w http.ResponseWriter) (OpsEngine, bool) {
	e := s.engine()
	if e == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "engine is recovering; retry after a second", true)
		return nil, false
	}
	o, ok := e.(OpsEngine)
	if !ok {
		writeJSONError(w, http.StatusNotImplemented, "this engine does not offer the operator API", false)
		return nil, false
	}
	return o, true
}

func writeJSONValue(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "internal error: "+err.Error(), false)
		return
	}
	writeJSON(w, status, append(b, '\n'))
}

func writeEngineError(w http.ResponseWriter, err error) {
	status, msg, retry := engineError(err)
	writeJSONError(w, status, msg, retry)
}

// rates keeps the last two samples of the engine's totals, taken once a
// second, so that /admin/status can say "per second" without the client
// asking twice.
type rates struct {
	mu         sync.Mutex
	prev, last rateSample
}

type rateSample struct {
	at                             time.Time
	ingress, processed, invocation uint64
	failures                       uint64
}

func sampleOf(st engine.Status, at time.Time) rateSample {
	r := rateSample{at: at, ingress: st.IngressMessages, processed: st.Processed}
	for _, sh := range st.Shards {
		r.invocation += sh.Invocations
		r.failures += sh.Failures
	}
	return r
}

// runSampler samples o every second until the admin listener shuts down.
func (s *Server) runSampler(o OpsEngine) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.baseCtx.Done():
			return
		case now := <-t.C:
			smp := sampleOf(o.Status(), now)
			s.rates.mu.Lock()
			s.rates.prev, s.rates.last = s.rates.last, smp
			s.rates.mu.Unlock()
		}
	}
}

// currentRates are the rates over the last two samples; nil until there
// are two.
func (s *Server) currentRates() *adminapi.Rates {
	s.rates.mu.Lock()
	p, l := s.rates.prev, s.rates.last
	s.rates.mu.Unlock()
	if p.at.IsZero() || !l.at.After(p.at) {
		return nil
	}
	d := l.at.Sub(p.at).Seconds()
	per := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / d
	}
	return &adminapi.Rates{WindowSeconds: d, Ingress: per(p.ingress, l.ingress), Processed: per(p.processed, l.processed),
		Invocations: per(p.invocation, l.invocation), Failures: per(p.failures, l.failures)}
}

// adminStatus answers GET /admin/status.
func (s *Server) adminStatus(w http.ResponseWriter, _ *http.Request) {
	o, ok := s.ops(w)
	if !ok {
		return
	}
	st := o.Status()
	var out adminapi.Status
	out.Ready, out.Failed, out.Shards = st.Ready, st.Failed, len(st.Shards)
	out.IngressMessages, out.Processed = st.IngressMessages, st.Processed
	out.Rates = s.currentRates()
	out.Log.Durable, out.Log.Applied = st.LogDurable, st.StoreApplied
	if st.LogDurable > st.StoreApplied {
		out.Log.ApplierLag = st.LogDurable - st.StoreApplied
	}
	if !st.LastCheckpoint.IsZero() {
		t := st.LastCheckpoint.UTC()
		age := time.Since(st.LastCheckpoint).Seconds()
		out.Checkpoint.Last, out.Checkpoint.AgeSeconds = &t, &age
	}
	out.Checkpoint.IntervalSeconds = st.CheckpointInterval.Seconds()
	out.Recovery.DurationSeconds = st.Recovery.Duration.Seconds()
	out.Recovery.ReplayedRecords, out.Recovery.ReplayedBytes = st.Recovery.Records, st.Recovery.Bytes
	out.Recovery.RestoredInFlight, out.Recovery.RestoredTimers = st.Recovery.Pending, st.Recovery.Timers
	for _, sh := range st.Shards {
		out.Invocations += sh.Invocations
		out.Failures += sh.Failures
		out.PerShard = append(out.PerShard, adminapi.ShardStats{Index: sh.Index, Mailbox: sh.Mailbox, QueueDepth: sh.QueueDepth,
			DelayedMessages: sh.DelayedMessages, Invocations: sh.Invocations, Failures: sh.Failures,
			LogAppends: sh.Appends, LogRecords: sh.Records, CacheHits: sh.CacheHits, CacheMisses: sh.CacheMisses,
			CacheEvictions: sh.CacheEvictions, CacheBytes: sh.CacheBytes, CacheCapacity: sh.CacheCapacity})
	}
	writeJSONValue(w, http.StatusOK, out)
}

type specJSON struct {
	Name               string  `json:"name"`
	Type               string  `json:"type"`
	Expire             string  `json:"expire"`
	ExpireAfterSeconds float64 `json:"expire_after_seconds,omitempty"`
}

type functionJSON struct {
	Name        string     `json:"name"`
	Kind        string     `json:"kind"`
	Endpoint    string     `json:"endpoint,omitempty"`
	States      []specJSON `json:"states"`
	Invocations uint64     `json:"invocations"`
	Failures    uint64     `json:"failures"`
}

func expireName(m engine.ExpireMode) string {
	switch m {
	case engine.ExpireAfterWrite:
		return "after_write"
	case engine.ExpireAfterInvoke:
		return "after_invoke"
	}
	return "never"
}

// adminFunctions answers GET /admin/functions.
func (s *Server) adminFunctions(w http.ResponseWriter, _ *http.Request) {
	o, ok := s.ops(w)
	if !ok {
		return
	}
	out := struct {
		Functions []functionJSON `json:"functions"`
	}{Functions: []functionJSON{}}
	for _, f := range o.Functions() {
		fj := functionJSON{Name: f.Namespace + "/" + f.Type, Kind: "embedded", States: []specJSON{},
			Invocations: f.Invocations, Failures: f.Failures}
		if f.Remote != nil {
			fj.Kind = "remote"
			if rf, ok := f.Remote.(*remote.Function); ok {
				fj.Endpoint = rf.Endpoint().URLTemplate
			}
		}
		for _, v := range f.States {
			sj := specJSON{Name: v.Name, Type: v.Type, Expire: expireName(v.Mode)}
			if v.Mode != engine.ExpireNever {
				sj.ExpireAfterSeconds = v.Expiry.Seconds()
			}
			fj.States = append(fj.States, sj)
		}
		out.Functions = append(out.Functions, fj)
	}
	writeJSONValue(w, http.StatusOK, out)
}
