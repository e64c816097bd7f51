package httpapi

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardfn/shardfn/console"
	"github.com/shardfn/shardfn/engine"
)

// adminHandler builds the admin routes (see the package documentation).
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /ready", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog:      slogPrintln{s},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /state/{namespace}/{type}/{id}", s.state)
	mux.HandleFunc("POST /state/{namespace}/{type}/{id}", s.stateWriteMany)
	mux.HandleFunc("PUT /state/{namespace}/{type}/{id}/{name}", s.stateSet)
	mux.HandleFunc("DELETE /state/{namespace}/{type}/{id}/{name}", s.stateDelete)
	mux.HandleFunc("GET /admin/status", s.adminStatus)
	mux.HandleFunc("GET /admin/functions", s.adminFunctions)
	mux.HandleFunc("GET /admin/instances/{namespace}/{type}/{id}", s.adminInstance)
	mux.HandleFunc("GET /admin/dead-letters", s.adminDeadLetters)
	mux.HandleFunc("POST /admin/dead-letters/replay", s.adminReplay)
	mux.HandleFunc("GET /admin/egress/{name}", s.adminEgress)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", console.Handler()))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no such admin route; use /ui/ (the console), /health, /ready, /metrics, /debug/pprof/, /state/{namespace}/{type}/{id} or /admin/...", false)
	})
	return mux
}

type slogPrintln struct{ s *Server }

func (l slogPrintln) Println(v ...any) { l.s.opts.Logger.Warn("metrics", "detail", v) }

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSONError(w http.ResponseWriter, status int, msg string, retry bool) {
	if retry {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, appendErrorBody(nil, msg))
}

// health is 200 while the process lives (recovering included) and 503 once
// the engine is in failed-stop or the server is shutting down (draining).
// While remote endpoints are stuck it is 200 with "status":"degraded" and
// the list of them:
//
//	{"status":"degraded","stuck_endpoints":[{"endpoint":"ns/*","url":"...",
//	  "since":"2006-01-02T15:04:05.000Z","consecutive_failures":12,
//	  "retrying_batches":3,"last_error":"..."}]}
func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	e := s.engine()
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, []byte(`{"status":"draining"}`+"\n"))
	case e == nil:
		writeJSON(w, http.StatusOK, []byte(`{"status":"recovering"}`+"\n"))
	case e.Err() != nil:
		b := append([]byte(`{"status":"failed","error":`), appendJSONString(nil, e.Err().Error())...)
		writeJSON(w, http.StatusServiceUnavailable, append(b, '}', '\n'))
	default:
		var stuck []StuckEndpoint
		if s.opts.StuckEndpoints != nil {
			stuck = s.opts.StuckEndpoints()
		}
		var slow []engine.SlowInvocation
		if se, ok := e.(interface {
			SlowInvocations() []engine.SlowInvocation
		}); ok {
			slow = se.SlowInvocations()
		}
		if len(stuck) == 0 && len(slow) == 0 {
			writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`+"\n"))
			return
		}
		b := []byte(`{"status":"degraded"`)
		if len(stuck) > 0 {
			b = appendStuck(append(b, `,"stuck_endpoints":[`...), stuck)
		}
		if len(slow) > 0 {
			b = appendSlow(append(b, `,"slow_invocations":[`...), slow)
		}
		writeJSON(w, http.StatusOK, append(b, '}', '\n'))
	}
}

// appendSlow appends the slow invocations and closes the list.
func appendSlow(b []byte, slow []engine.SlowInvocation) []byte {
	for i, si := range slow {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"shard":`...)
		b = strconv.AppendInt(b, int64(si.Shard), 10)
		b = append(b, `,"address":`...)
		b = appendJSONString(b, si.Address.String())
		b = append(b, `,"since":`...)
		b = appendJSONString(b, si.Since.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendStuck(b []byte, stuck []StuckEndpoint) []byte {
	for i, st := range stuck {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"endpoint":`...)
		b = appendJSONString(b, st.Endpoint)
		b = append(b, `,"url":`...)
		b = appendJSONString(b, st.URL)
		b = append(b, `,"since":`...)
		b = appendJSONString(b, st.Since.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		b = append(b, `,"consecutive_failures":`...)
		b = strconv.AppendInt(b, int64(st.ConsecutiveFailures), 10)
		b = append(b, `,"retrying_batches":`...)
		b = strconv.AppendInt(b, int64(st.RetryingBatches), 10)
		b = append(b, `,"last_error":`...)
		b = appendJSONString(b, st.LastError)
		b = append(b, '}')
	}
	return append(b, ']')
}

// ready is 200 once the engine has recovered and until the server starts
// shutting down, the engine closes or it fails.
func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	e := s.engine()
	switch {
	case s.draining.Load():
		writeJSONError(w, http.StatusServiceUnavailable, "not ready: the server is shutting down", true)
	case e == nil:
		writeJSONError(w, http.StatusServiceUnavailable, "not ready: the engine is recovering", true)
	case e.Err() != nil:
		writeJSONError(w, http.StatusServiceUnavailable, "not ready: failed-stop: "+e.Err().Error(), false)
	case !e.Ready():
		writeJSONError(w, http.StatusServiceUnavailable, "not ready: the engine is recovering or closing", true)
	default:
		writeJSON(w, http.StatusOK, []byte(`{"ready":true}`+"\n"))
	}
}

// state answers GET /state/{namespace}/{type}/{id}:
//
//	{"address":"ns/type/id","state":{"<name>":{"type":"...","value":<JSON>},...}}
//
// Every value the function type declares is listed: "value" (a built-in
// type decoded, or bytes that are JSON), "text" (other printable UTF-8) or
// "value_b64"; an unset value is {"type":"...","present":false}. An
// unregistered function type is answered 404 naming it.
func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	if s.opts.DisableStateAPI {
		writeJSONError(w, http.StatusNotFound, "the state API is disabled (start the server with --state-api=true to enable it)", false)
		return
	}
	e := s.engine()
	if e == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "engine is recovering; retry after a second", true)
		return
	}
	addr := engine.Address{Namespace: r.PathValue("namespace"), Type: r.PathValue("type"), ID: r.PathValue("id")}
	for _, p := range []string{addr.Namespace, addr.Type, addr.ID} {
		if p == "" || len(p) > MaxSegmentBytes || !printableUTF8([]byte(p)) {
			writeJSONError(w, http.StatusBadRequest, "address must be /state/{namespace}/{type}/{id}, each non-empty UTF-8 text", false)
			return
		}
	}
	if f, ok := e.(StateForwarder); ok && forwardState(w, r, f, addr) { // cluster mode: the owner answers (forward.go)
		return
	}
	vals, err := e.State(r.Context(), addr)
	if errors.Is(err, engine.ErrUnknownType) {
		writeJSONError(w, http.StatusNotFound, "no function type "+addr.Namespace+"/"+addr.Type+" is registered, so "+addr.String()+" has no state", false)
		return
	}
	if err != nil {
		status, msg, retry := engineError(err)
		writeJSONError(w, status, msg, retry)
		return
	}
	b := append([]byte(`{"address":`), appendJSONString(nil, addr.String())...)
	b = append(b, `,"state":`...)
	b = appendStateObject(b, vals)
	b = append(b, '}', '\n')
	writeJSON(w, http.StatusOK, b)
}

// appendMapState appends ,"entries":N,"map":{"<key>":<value as in a
// state value>,...} (the first engine.MaxStateMapEntries entries).
func appendMapState(b []byte, v engine.StateValue) []byte {
	b = append(b, `,"entries":`...)
	b = strconv.AppendInt(b, int64(v.MapLen), 10)
	b = append(b, `,"map":{`...)
	for i, en := range v.Map {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, en.Key)
		b = append(b, ":{"...)
		b = appendValue(b, "value", "", en.Value)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendStateObject appends {"<name>":{"type":"...","value":<JSON>},...}.
func appendStateObject(b []byte, vals []engine.StateValue) []byte {
	b = append(b, '{')
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v.Spec.Name)
		b = append(b, `:{"type":`...)
		b = appendJSONString(b, v.Spec.Type)
		switch {
		case v.Spec.Type == engine.TypeMap:
			b = appendMapState(b, v)
		case v.Present:
			b = append(b, ',')
			b = appendValue(b, "value", v.Spec.Type, v.Value)
		default:
			b = append(b, `,"present":false`...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}
