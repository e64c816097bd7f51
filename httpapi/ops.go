package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/shardfn/shardfn/engine"
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

type statusRates struct {
	WindowSeconds  float64 `json:"window_seconds"`
	Ingress        float64 `json:"ingress_messages_per_second"`
	Processed      float64 `json:"processed_per_second"`
	Invocations    float64 `json:"invocations_per_second"`
	FailuresPerSec float64 `json:"failures_per_second"`
}

func (s *Server) currentRates() *statusRates {
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
	return &statusRates{WindowSeconds: d, Ingress: per(p.ingress, l.ingress), Processed: per(p.processed, l.processed),
		Invocations: per(p.invocation, l.invocation), FailuresPerSec: per(p.failures, l.failures)}
}

type statusJSON struct {
	Ready           bool         `json:"ready"`
	Failed          string       `json:"failed,omitempty"`
	Shards          int          `json:"shards"`
	IngressMessages uint64       `json:"ingress_messages"`
	Processed       uint64       `json:"processed"`
	Invocations     uint64       `json:"invocations"`
	Failures        uint64       `json:"failures"`
	Rates           *statusRates `json:"rates,omitempty"`
	Log             struct {
		Durable    uint64 `json:"durable_position"`
		Applied    uint64 `json:"applied_position"`
		ApplierLag uint64 `json:"applier_lag_bytes"`
	} `json:"log"`
	Checkpoint struct {
		Last            *time.Time `json:"last,omitempty"`
		AgeSeconds      *float64   `json:"age_seconds,omitempty"`
		IntervalSeconds float64    `json:"interval_seconds"`
	} `json:"checkpoint"`
	Recovery struct {
		DurationSeconds  float64 `json:"duration_seconds"`
		ReplayedRecords  uint64  `json:"replayed_records"`
		ReplayedBytes    uint64  `json:"replayed_bytes"`
		RestoredInFlight int     `json:"restored_in_flight"`
		RestoredTimers   int     `json:"restored_timers"`
	} `json:"recovery"`
	PerShard []shardJSON `json:"per_shard"`
}

type shardJSON struct {
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

// adminStatus answers GET /admin/status.
func (s *Server) adminStatus(w http.ResponseWriter, _ *http.Request) {
	o, ok := s.ops(w)
	if !ok {
		return
	}
	st := o.Status()
	var out statusJSON
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
		out.PerShard = append(out.PerShard, shardJSON{Index: sh.Index, Mailbox: sh.Mailbox, QueueDepth: sh.QueueDepth,
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

// pathAddress reads {namespace}/{type}/{id} from the request path.
func pathAddress(w http.ResponseWriter, r *http.Request, what string) (engine.Address, bool) {
	addr := engine.Address{Namespace: r.PathValue("namespace"), Type: r.PathValue("type"), ID: r.PathValue("id")}
	for _, p := range []string{addr.Namespace, addr.Type, addr.ID} {
		if p == "" || len(p) > MaxSegmentBytes || !printableUTF8([]byte(p)) {
			writeJSONError(w, http.StatusBadRequest, "address must be "+what+"/{namespace}/{type}/{id}, each non-empty UTF-8 text", false)
			return addr, false
		}
	}
	return addr, true
}

// stateWrite is the body of POST /state/{namespace}/{type}/{id}.
type stateWrite struct {
	Set    map[string]stateInput `json:"set"`
	Delete []string              `json:"delete"`
}

// stateSet answers PUT /state/{namespace}/{type}/{id}/{name}.
func (s *Server) stateSet(w http.ResponseWriter, r *http.Request) {
	var in stateInput
	if !readJSONBody(w, r, &in) {
		return
	}
	s.repair(w, r, stateWrite{Set: map[string]stateInput{r.PathValue("name"): in}})
}

// stateDelete answers DELETE /state/{namespace}/{type}/{id}/{name}.
func (s *Server) stateDelete(w http.ResponseWriter, r *http.Request) {
	s.repair(w, r, stateWrite{Delete: []string{r.PathValue("name")}})
}

// stateWriteMany answers POST /state/{namespace}/{type}/{id}.
func (s *Server) stateWriteMany(w http.ResponseWriter, r *http.Request) {
	var in stateWrite
	if !readJSONBody(w, r, &in) {
		return
	}
	s.repair(w, r, in)
}

func readJSONBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("cannot read the body (at most %d bytes): %v", maxAdminBody, err), false)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSONError(w, http.StatusBadRequest, "body is not the expected JSON: "+err.Error(), false)
		return false
	}
	return true
}

// repair validates a state write, hands it to SetState (through the log)
// and answers with the instance's state afterwards.
func (s *Server) repair(w http.ResponseWriter, r *http.Request, in stateWrite) {
	if s.opts.DisableStateAPI {
		writeJSONError(w, http.StatusNotFound, "the state API is disabled (start the server with --state-api=true to enable it)", false)
		return
	}
	o, ok := s.ops(w)
	if !ok {
		return
	}
	addr, ok := pathAddress(w, r, "/state")
	if !ok {
		return
	}
	specs, ok := specsOf(o, addr)
	if !ok {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("function type %s is not registered", addr.FunctionType()), false)
		return
	}
	if len(in.Set)+len(in.Delete) == 0 {
		writeJSONError(w, http.StatusBadRequest, `nothing to write: give {"set":{"<name>":{"value":<JSON>}},"delete":["<name>"]}`, false)
		return
	}
	var muts []engine.StateMutation
	for name, v := range in.Set {
		sp, found := specs[name]
		if !found {
			writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("state %q is not declared by %s", name, addr.FunctionType()), false)
			return
		}
		m, err := encodeStateInput(name, sp, v)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error(), false)
			return
		}
		muts = append(muts, engine.StateMutation{Name: name, Value: m})
	}
	for _, name := range in.Delete {
		muts = append(muts, engine.StateMutation{Name: name, Delete: true})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := o.SetState(ctx, addr, muts); err != nil {
		writeEngineError(w, err)
		return
	}
	s.state(w, r)
}

// specsOf returns the declared state types of addr's function type.
func specsOf(o OpsEngine, addr engine.Address) (map[string]string, bool) {
	var wild map[string]string
	for _, f := range o.Functions() {
		if f.Namespace != addr.Namespace {
			continue
		}
		m := make(map[string]string, len(f.States))
		for _, v := range f.States {
			m[v.Name] = v.Type
		}
		if f.Type == addr.Type {
			return m, true
		}
		if f.Type == "*" {
			wild = m
		}
	}
	return wild, wild != nil
}

// appendMessageFields appends a message's "type" and "body"/"text"/"body_b64"
// as one JSON object's fields (no braces).
func appendMessageFields(b []byte, m engine.Message) []byte {
	b = append(b, `"type":`...)
	b = appendJSONString(b, m.Type)
	b = append(b, ',')
	if len(m.Value) == 0 {
		return append(b, `"body":null`...)
	}
	return appendValue(b, "body", m.Type, m.Value)
}

// adminInstance answers GET /admin/instances/{namespace}/{type}/{id}: the
// state, the queued messages and the pending delayed messages.
func (s *Server) adminInstance(w http.ResponseWriter, r *http.Request) {
	if s.opts.DisableStateAPI {
		writeJSONError(w, http.StatusNotFound, "the state API is disabled (start the server with --state-api=true to enable it)", false)
		return
	}
	o, ok := s.ops(w)
	if !ok {
		return
	}
	addr, ok := pathAddress(w, r, "/admin/instances")
	if !ok {
		return
	}
	max := 100
	if v := r.URL.Query().Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeJSONError(w, http.StatusBadRequest, "max must be an integer from 1 to 10000", false)
			return
		}
		max = n
	}
	e := s.engine()
	vals, err := e.State(r.Context(), addr)
	if err != nil {
		writeEngineError(w, err)
		return
	}
	info, err := o.Inspect(r.Context(), addr, max)
	if err != nil {
		writeEngineError(w, err)
		return
	}
	b := append([]byte(`{"address":`), appendJSONString(nil, addr.String())...)
	b = append(b, `,"state":`...)
	b = appendStateObject(b, vals)
	b = fmt.Appendf(b, `,"active":%t,"busy":%t,"queued_total":%d,"queued":[`, info.Active, info.Busy, info.QueuedTotal)
	for i, q := range info.Queued {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":"%d","caller":`, q.ID)
		b = appendJSONString(b, addrOrEmpty(q.Caller))
		b = fmt.Appendf(b, `,"in_request":%t,`, q.InRequest)
		b = appendMessageFields(b, q.Message)
		b = append(b, '}')
	}
	b = append(b, `],"delayed":[`...)
	for i, d := range info.Delayed {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":"%d","from":`, d.ID)
		b = appendJSONString(b, addrOrEmpty(d.From))
		b = append(b, `,"to":`...)
		b = appendJSONString(b, d.To.String())
		b = append(b, `,"fire_at":`...)
		b = appendJSONString(b, d.FireAt.UTC().Format(time.RFC3339Nano))
		b = append(b, `,"token":`...)
		b = appendJSONString(b, d.Token)
		b = append(b, ',')
		b = appendMessageFields(b, d.Message)
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	writeJSON(w, http.StatusOK, b)
}

func addrOrEmpty(a engine.Address) string {
	if a.IsZero() {
		return ""
	}
	return a.String()
}

func queryUint(r *http.Request, name string, def uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

// adminDeadLetters answers GET /admin/dead-letters?from=&max=.
func (s *Server) adminDeadLetters(w http.ResponseWriter, r *http.Request) {
	o, ok := s.ops(w)
	if !ok {
		return
	}
	from, err := queryUint(r, "from", 0)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error(), false)
		return
	}
	max, err := queryUint(r, "max", 100)
	if err != nil || max < 1 || max > uint64(s.opts.MaxEgressRecords) {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("max must be an integer from 1 to %d", s.opts.MaxEgressRecords), false)
		return
	}
	dls, err := o.DeadLetters(r.Context(), from, int(max))
	if err != nil {
		writeEngineError(w, err)
		return
	}
	next := from
	b := append(make([]byte, 0, 256), `{"records":[`...)
	for i, d := range dls {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendDeadLetter(b, d)
		next = d.Offset + 1
	}
	b = fmt.Appendf(b, `],"next":%d}`+"\n", next)
	writeJSON(w, http.StatusOK, b)
}

func appendDeadLetter(b []byte, d engine.DeadLetter) []byte {
	b = fmt.Appendf(b, `{"offset":%d,"target":`, d.Offset)
	b = appendJSONString(b, addrOrEmpty(d.Target))
	b = append(b, `,"caller":`...)
	b = appendJSONString(b, addrOrEmpty(d.Caller))
	b = append(b, `,"error":`...)
	b = appendJSONString(b, d.Error)
	if d.Bad != "" {
		b = append(b, `,"bad":`...)
		b = appendJSONString(b, d.Bad)
	}
	b = append(b, ',')
	b = appendMessageFields(b, d.Message)
	return append(b, '}')
}

// adminReplay answers POST /admin/dead-letters/replay?from=&to= (to
// exclusive).
func (s *Server) adminReplay(w http.ResponseWriter, r *http.Request) {
	o, ok := s.ops(w)
	if !ok {
		return
	}
	from, err1 := queryUint(r, "from", 0)
	to, err2 := queryUint(r, "to", 0)
	if err := errors.Join(err1, err2); err != nil || r.URL.Query().Get("to") == "" {
		writeJSONError(w, http.StatusBadRequest, "give from=<first offset>&to=<offset after the last> (non-negative integers)", false)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	res, err := o.ReplayDeadLetters(ctx, from, to)
	if err != nil {
		writeEngineError(w, err)
		return
	}
	type skipped struct {
		Offset uint64 `json:"offset"`
		Target string `json:"target"`
		Reason string `json:"reason"`
	}
	out := struct {
		Replayed []uint64  `json:"replayed"`
		Skipped  []skipped `json:"skipped"`
	}{Replayed: []uint64{}, Skipped: []skipped{}}
	for _, d := range res.Replayed {
		out.Replayed = append(out.Replayed, d.Offset)
	}
	for _, d := range res.Skipped {
		out.Skipped = append(out.Skipped, skipped{d.Offset, addrOrEmpty(d.Target), d.Bad})
	}
	writeJSONValue(w, http.StatusOK, out)
}

// adminEgress answers GET /admin/egress/{name}?from=&max=&wait=, the
// ingress's egress read on the admin listener (for the console).
func (s *Server) adminEgress(w http.ResponseWriter, r *http.Request) {
	e := s.engine()
	if e == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "engine is recovering; retry after a second", true)
		return
	}
	name := r.PathValue("name")
	if name == "" || len(name) > MaxSegmentBytes || !printableUTF8([]byte(name)) {
		writeJSONError(w, http.StatusBadRequest, "egress name must be non-empty UTF-8 text, at most 1024 bytes", false)
		return
	}
	from, err := queryUint(r, "from", 0)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error(), false)
		return
	}
	max, err := queryUint(r, "max", defaultEgressMax)
	if err != nil || max < 1 || max > uint64(s.opts.MaxEgressRecords) {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("max must be an integer from 1 to %d", s.opts.MaxEgressRecords), false)
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := parseDuration([]byte(v))
		if err != nil || d > s.opts.MaxWait {
			writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("wait=%q must be a duration up to %s", v, s.opts.MaxWait), false)
			return
		}
		wait = d
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.pollCtx, cancel)
	defer stop()
	recs, err := e.ReadEgress(ctx, name, from, int(max), s.opts.MaxEgressBytes, wait)
	if err != nil && !errors.Is(err, context.Canceled) {
		writeEngineError(w, err)
		return
	}
	next := from
	b := append(make([]byte, 0, 256), `{"records":[`...)
	for i, rec := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"offset":%d,"type":`, rec.Offset)
		b = appendJSONString(b, rec.Message.Type)
		b = append(b, ',')
		b = appendEgressBody(b, rec.Message.Type, rec.Message.Value)
		b = append(b, `,"source":`...)
		b = appendJSONString(b, rec.Source.String())
		b = append(b, '}')
		next = rec.Offset + 1
	}
	b = fmt.Appendf(b, `],"next":%d}`+"\n", next)
	writeJSON(w, http.StatusOK, b)
}
