package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// addrOrEmpty is a.String(), or "" for the zero address.
func addrOrEmpty(a engine.Address) string {
	if a.IsZero() {
		return ""
	}
	return a.String()
}

// queryUint reads the query parameter name as a non-negative integer; def
// when it is absent.
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
	if d.Replayed {
		b = append(b, `,"replayed":true`...)
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
	writeJSON(w, http.StatusOK, appendEgressAnswer(make([]byte, 0, 256), recs, from))
}
