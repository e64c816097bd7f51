package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/shardfn/shardfn/engine"
)

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

// stateRoute starts a route that reads or writes an instance's state: it
// answers 404 when the state API is disabled, as ops does when the engine
// cannot serve it, and reads the address from the path (prefix what).
func (s *Server) stateRoute(w http.ResponseWriter, r *http.Request, what string) (OpsEngine, engine.Address, bool) {
	if s.opts.DisableStateAPI {
		writeJSONError(w, http.StatusNotFound, "the state API is disabled (start the server with --state-api=true to enable it)", false)
		return nil, engine.Address{}, false
	}
	o, ok := s.ops(w)
	if !ok {
		return nil, engine.Address{}, false
	}
	addr, ok := pathAddress(w, r, what)
	return o, addr, ok
}

// stateWrite is the body of POST /state/{namespace}/{type}/{id}.
type stateWrite struct {
	Set    map[string]stateInput `json:"set"`
	Delete []string              `json:"delete"`
}

// stateSet answers PUT /state/{namespace}/{type}/{id}/{name}.
func (s *Server) stateSet(w http.ResponseWriter, r *http.Request) {
	body, ok := s.repairBody(w, r)
	if !ok {
		return
	}
	var in stateInput
	if !decodeJSONBody(w, body, &in) {
		return
	}
	s.repair(w, r, stateWrite{Set: map[string]stateInput{r.PathValue("name"): in}})
}

// stateDelete answers DELETE /state/{namespace}/{type}/{id}/{name}.
func (s *Server) stateDelete(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.repairBody(w, r); !ok {
		return
	}
	s.repair(w, r, stateWrite{Delete: []string{r.PathValue("name")}})
}

// stateWriteMany answers POST /state/{namespace}/{type}/{id}.
func (s *Server) stateWriteMany(w http.ResponseWriter, r *http.Request) {
	body, ok := s.repairBody(w, r)
	if !ok {
		return
	}
	var in stateWrite
	if !decodeJSONBody(w, body, &in) {
		return
	}
	s.repair(w, r, in)
}

// repairBody starts a state write: it checks the route (state API
// enabled, operator API offered, address) and reads the body; in cluster
// mode a write for an address another node owns is forwarded there (its
// answer relayed) and ok is false.
func (s *Server) repairBody(w http.ResponseWriter, r *http.Request) (body []byte, ok bool) {
	_, addr, ok := s.stateRoute(w, r, "/state")
	if !ok {
		return nil, false
	}
	if r.Method != http.MethodDelete {
		if body, ok = readBody(w, r); !ok {
			return nil, false
		}
	}
	if s.forwardOps(w, r, addr, body) {
		return nil, false
	}
	return body, true
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("cannot read the body (at most %d bytes): %v", maxAdminBody, err), false)
		return nil, false
	}
	return body, true
}

func decodeJSONBody(w http.ResponseWriter, body []byte, v any) bool {
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
	o, addr, ok := s.stateRoute(w, r, "/state")
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
	o, addr, ok := s.stateRoute(w, r, "/admin/instances")
	if !ok || s.forwardOps(w, r, addr, nil) { // cluster mode: the owner answers
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
