package httpapi

import (
	"context"
	"io"
	"net/http"

	"github.com/shardfn/shardfn/engine"
)

// ForwardedHeader marks a GET /state/... that one cluster node forwarded to
// another. A server answers such a request from its own engine only, never
// forwarding it again: a node that does not own the address (the
// partitions moved in between) answers 421, so forwarding cannot loop.
const ForwardedHeader = "X-Shardfn-Forwarded"

// StateForwarder is implemented by an Engine whose state may live in
// another process (a cluster node, cluster.Node). GET /state/... asks it
// first, unless the request was itself forwarded (ForwardedHeader):
//
//   - nil, nil: the address is this process's to answer; the server reads
//     it with Engine.State;
//   - a response: the owner's answer, relayed as is (status,
//     Content-Type, Retry-After and body); the server closes its body;
//   - an error: the owner could not be asked, answered as an engine error
//     (engine.ErrNotOwner is 421, engine.ErrOverloaded 503 with
//     Retry-After).
type StateForwarder interface {
	ForwardState(ctx context.Context, addr engine.Address) (*http.Response, error)
}

// OpsForwarder is implemented by an Engine whose instances may live in
// another process (cluster.Node). The operator routes about one address
// (PUT, DELETE and POST /state/..., GET /admin/instances/...) ask it
// first, unless the request was itself forwarded (ForwardedHeader), with
// the request's method, escaped path and query, and body (nil: none). Its
// answers are those of StateForwarder; a forwarder sends the request
// with ForwardedHeader, so that the owner executes it or answers 421.
type OpsForwarder interface {
	ForwardOps(ctx context.Context, addr engine.Address, method, pathQuery string, body []byte) (*http.Response, error)
}

// forwardState answers r through f when the address lives elsewhere; it
// reports whether it answered.
func forwardState(w http.ResponseWriter, r *http.Request, f StateForwarder, addr engine.Address) bool {
	if r.Header.Get(ForwardedHeader) != "" {
		return false
	}
	resp, err := f.ForwardState(r.Context(), addr)
	return relayForwarded(w, resp, err)
}

// forwardOps answers r (whose body was read into body) through the
// engine's OpsForwarder when the address lives elsewhere; it reports
// whether it answered. An engine without one answers everything itself.
func (s *Server) forwardOps(w http.ResponseWriter, r *http.Request, addr engine.Address, body []byte) bool {
	f, ok := s.engine().(OpsForwarder)
	if !ok || r.Header.Get(ForwardedHeader) != "" {
		return false
	}
	pq := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		pq += "?" + r.URL.RawQuery
	}
	resp, err := f.ForwardOps(r.Context(), addr, r.Method, pq, body)
	return relayForwarded(w, resp, err)
}

// relayForwarded writes a forwarder's answer: the error, or the owner's
// response (closed here); false when there is neither (answer locally).
func relayForwarded(w http.ResponseWriter, resp *http.Response, err error) bool {
	if err != nil {
		status, msg, retry := engineError(err)
		writeJSONError(w, status, msg, retry)
		return true
	}
	if resp == nil {
		return false
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return true
}
