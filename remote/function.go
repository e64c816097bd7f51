package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardfn/shardfn/engine"
)

// Function is the engine.RemoteFunction of one endpoint pattern. It is
// safe for concurrent use; it lives as long as its Client.
type Function struct {
	c         *Client
	ep        Endpoint
	label     string
	http      *http.Client
	transport *http.Transport
	unix      bool
	urls      sync.Map // function type name -> request URL

	// Guarded by c.mu.
	queue   []*call
	running int
	h       endpointState
}

var _ engine.RemoteFunction = (*Function)(nil)

// Endpoint returns the function's endpoint settings.
func (f *Function) Endpoint() Endpoint { return f.ep }

// InvokeBatch queues the batch and returns at once; the call runs on the
// client's pool (never on the caller's goroutine), within the endpoint's
// concurrency limit, and done is called exactly once from a pool goroutine
// or a retry timer (or from the caller's goroutine if the client is
// closed).
func (f *Function) InvokeBatch(b *engine.RemoteBatch, done func(*engine.RemoteResult)) {
	f.c.enqueue(f, &call{f: f, b: b, done: done})
}

// call is one InvokeBatch: the batch and its progress through attempts.
// Its run state is touched by one goroutine at a time (the worker running
// it, or the timer or closing watcher that ends it); hand-overs go through
// the client's mutex.
type call struct {
	f    *Function
	b    *engine.RemoteBatch
	done func(*engine.RemoteResult)

	prepared bool
	u        string
	body     []byte              // encoding of the current (sub-)request
	states   []engine.StateValue // the state sent with it
	split    bool                // sent as sequential sub-requests
	from, to int                 // the current request's invocations
	mg       merger              // split: results of earlier sub-requests

	backoff time.Duration // next backoff before jitter

	// Written under c.mu (a closing engine's watcher reads them).
	failures     int       // failed attempts in all
	failingSince time.Time // start of the first failed attempt
	lastErr      error

	// Guarded by c.mu.
	timer  *time.Timer        // armed while waiting for a retry
	cancel context.CancelFunc // of the attempt in flight
}

// step runs k's attempts until the batch has a result, or must wait (the
// returned duration) before its next attempt. One batch is one request, or
// several sequential sub-requests when its encoding exceeds
// MaxRequestBytes: the state mutations of each answer are applied to the
// state sent with the next sub-request, so the function sees exactly what
// one big request would have shown it. Nothing is returned to the engine
// before every sub-request has succeeded: the merged result is one
// RemoteResult, applied by the engine as one atomic effect record; a
// sub-request that fails for good fails the whole batch (dead letter), and
// an incomplete-context answer to any sub-request discards the earlier
// sub-results and asks for the whole batch again.
func (f *Function) step(k *call) (*engine.RemoteResult, time.Duration) {
	if !k.prepared {
		if err := f.prepare(k); err != nil {
			return f.fail(k, err), 0
		}
	}
	for {
		ctx, cancel, res := f.beginAttempt(k)
		if res != nil {
			return res, 0
		}
		ctx, span := f.traceAttempt(ctx, k) // tracing.go: nil unless traced
		start := time.Now()
		resp, err := f.attempt(ctx, k.u, k.body, k.states)
		aborted := ctx.Err() == context.Canceled
		cancel()
		traceAttemptEnd(span, err)
		if err != nil {
			switch {
			case f.c.ctx.Err() != nil: // Client.Close
				f.endAttempt(k)
				return &engine.RemoteResult{Err: ErrClosed}, 0
			case aborted: // the engine is closing and this batch was failing
				f.endAttempt(k)
				return f.abandoned(k), 0
			}
			return f.failed(k, start, err)
		}
		f.succeeded(k)
		if !k.split {
			return resp.toResult(), 0
		}
		if len(resp.missing) > 0 {
			return &engine.RemoteResult{MissingSpecs: resp.missing}, 0
		}
		k.mg.add(&resp.result)
		for _, mu := range resp.result.Mutations {
			for i := range k.states {
				if k.states[i].Spec.Name == mu.Name {
					k.states[i].Present = !mu.Delete
					k.states[i].Value = mu.Value.Value
				}
			}
		}
		if k.to >= len(k.b.Invocations) {
			res := k.mg.res
			return &res, 0
		}
		k.from = k.to
		if err := f.nextSub(k); err != nil {
			return f.fail(k, err), 0
		}
	}
}

// prepare encodes k's first request.
func (f *Function) prepare(k *call) error {
	k.prepared = true
	k.backoff = f.ep.RetryBackoff
	u, err := f.url(k.b.Target.Type)
	if err != nil {
		return err
	}
	k.u = u
	invs := k.b.Invocations
	body, err := proto.Marshal(buildRequest(k.b.Target, k.b.States, invs))
	if err != nil {
		return fmt.Errorf("remote: encoding ToFunction: %w", err)
	}
	if len(body) <= f.ep.MaxRequestBytes || len(invs) <= 1 {
		k.body, k.states, k.from, k.to = body, k.b.States, 0, len(invs)
		return nil
	}
	k.split = true
	k.states = make([]engine.StateValue, len(k.b.States))
	copy(k.states, k.b.States)
	return f.nextSub(k)
}

// nextSub encodes the sub-request of the consecutive invocations from
// k.from that fit the byte budget (a single invocation larger than the
// budget goes alone).
func (f *Function) nextSub(k *call) error {
	invs := k.b.Invocations
	size := proto.Size(buildRequest(k.b.Target, k.states, nil))
	j := k.from
	for j < len(invs) {
		s := invocationSize(invs[j])
		if j > k.from && size+s > f.ep.MaxRequestBytes {
			break
		}
		size += s
		j++
	}
	body, err := proto.Marshal(buildRequest(k.b.Target, k.states, invs[k.from:j]))
	if err != nil {
		return fmt.Errorf("remote: encoding ToFunction: %w", err)
	}
	k.body, k.to = body, j
	f.c.metrics.splits.WithLabelValues(f.label).Inc()
	return nil
}

// attemptTimeout bounds one attempt: CallTimeout, or WriteTimeout +
// ReadTimeout when that is shorter.
func (f *Function) attemptTimeout() time.Duration {
	return min(f.ep.CallTimeout, f.ep.WriteTimeout+f.ep.ReadTimeout)
}

// failed handles a failed attempt: it dead-letters a failure that cannot
// heal, gives up past GiveUpAfter or MaxRetries, gives the batch up when
// the engine is closing, and otherwise returns the backoff before the next
// attempt.
func (f *Function) failed(k *call, start time.Time, err error) (*engine.RemoteResult, time.Duration) {
	now := time.Now()
	var ae *attemptError
	if !errors.As(err, &ae) {
		ae = &attemptError{err: err, reason: "internal"}
	}
	f.endFailedAttempt(k, ae, start, now).log(f.c.opts.Logger)
	where := ""
	if k.split {
		where = fmt.Sprintf("sub-request for invocations %d..%d of %d: ", k.from, k.to-1, len(k.b.Invocations))
	}
	if !ae.retry {
		return f.fail(k, fmt.Errorf("remote: %s: %sattempt %d failed, not retryable: %w", f.label, where, k.failures, err)), 0
	}
	if closed(k.b.Closing) {
		return f.abandoned(k), 0
	}
	if f.ep.MaxRetries > 0 && k.failures > f.ep.MaxRetries {
		return f.fail(k, fmt.Errorf("remote: %s: %s%w after %d attempts (maxRetries %d): %w", f.label, where, ErrGaveUp, k.failures, f.ep.MaxRetries, err)), 0
	}
	g := f.ep.GiveUpAfter
	if g > 0 && now.Sub(k.failingSince) >= g {
		return f.fail(k, fmt.Errorf("remote: %s: %s%w: still failing after %v (giveUpAfter %v), %d attempts: %w",
			f.label, where, ErrGaveUp, now.Sub(k.failingSince).Round(time.Millisecond), g, k.failures, err)), 0
	}
	wait := f.c.jitter(k.backoff)
	k.backoff = min(2*k.backoff, f.ep.MaxRetryBackoff)
	if g > 0 {
		// The last attempt is made at the give-up deadline, not after it.
		wait = min(wait, k.failingSince.Add(g).Sub(now))
	}
	f.c.metrics.retries.WithLabelValues(f.label).Inc()
	return nil, wait
}

// fail is the result of a batch that failed for good: the engine sends its
// messages to dead-letters.
func (f *Function) fail(k *call, err error) *engine.RemoteResult {
	f.c.opts.Logger.Warn("remote: batch failed for good; its messages go to dead-letters",
		"endpoint", f.label, "target", k.b.Target.String(), "invocations", len(k.b.Invocations), "err", err)
	return &engine.RemoteResult{Err: err}
}

// abandoned is the result of a batch given up because its engine is
// closing; the engine leaves its messages for the next start.
func (f *Function) abandoned(k *call) *engine.RemoteResult {
	return &engine.RemoteResult{Err: fmt.Errorf("remote: %s: the engine is closing: batch of %d messages for %s left for the next start after %d failed attempts (last error: %v): %w",
		f.label, len(k.b.Invocations), k.b.Target.String(), k.failures, k.lastErr, engine.ErrAbandoned)}
}

// merger folds sub-results into one: the last mutation of each state wins,
// everything else is concatenated in order.
type merger struct {
	res    engine.RemoteResult
	mutIdx map[string]int
}

func (m *merger) add(r *engine.RemoteResult) {
	if m.mutIdx == nil {
		m.mutIdx = map[string]int{}
	}
	for _, mu := range r.Mutations {
		if i, ok := m.mutIdx[mu.Name]; ok {
			m.res.Mutations[i] = mu
			continue
		}
		m.mutIdx[mu.Name] = len(m.res.Mutations)
		m.res.Mutations = append(m.res.Mutations, mu)
	}
	m.res.Sends = append(m.res.Sends, r.Sends...)
	m.res.Delayed = append(m.res.Delayed, r.Delayed...)
	m.res.Cancels = append(m.res.Cancels, r.Cancels...)
	m.res.Egress = append(m.res.Egress, r.Egress...)
}

func (r *response) toResult() *engine.RemoteResult {
	if len(r.missing) > 0 {
		return &engine.RemoteResult{MissingSpecs: r.missing}
	}
	res := r.result
	return &res
}

// attemptError is a failed attempt: retry says whether the failure may
// heal (and so whether policy allows another attempt); reason is the label
// of shardfn_remote_failures_total.
type attemptError struct {
	err    error
	retry  bool
	reason string
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// Failure reasons (the "reason" label of shardfn_remote_failures_total).
// The first six may heal and are retried; the others dead-letter at once.
const (
	failConnect     = "connect"      // dialing failed: connection refused, no route, DNS
	failTimeout     = "timeout"      // an attempt, dial or response header timed out
	failNetwork     = "network"      // the connection broke, e.g. reset mid-response
	failHTTP408     = "http_408"     // Request Timeout
	failHTTP429     = "http_429"     // Too Many Requests
	failHTTP5xx     = "http_5xx"     // server errors (502/503 of a restarting service)
	failHTTPStatus  = "http_4xx"     // any other status outside 2xx
	failBadResponse = "bad_response" // a 2xx answer that breaks the protocol
)

func netFailure(err error, actx context.Context, u, what string) *attemptError {
	reason := failNetwork
	var oe *net.OpError
	switch {
	case isTimeout(err) || actx.Err() != nil:
		reason = failTimeout
	case errors.As(err, &oe) && oe.Op == "dial":
		reason = failConnect
	}
	return &attemptError{err: fmt.Errorf("POST %s: %s%w", u, what, err), retry: true, reason: reason}
}

// attempt performs one HTTP exchange and validates the answer. Every
// failure is an *attemptError.
func (f *Function) attempt(actx context.Context, u string, body []byte, states []engine.StateValue) (*response, error) {
	m := f.c.metrics
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, &attemptError{err: fmt.Errorf("remote: %s: building request: %w", f.label, err), reason: failBadResponse}
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("User-Agent", f.c.opts.UserAgent)
	injectTrace(actx, req.Header) // tracing.go
	start := time.Now()
	hr, err := f.http.Do(req)
	if err != nil {
		ae := netFailure(err, actx, u, "")
		m.requests.WithLabelValues(f.label, requestOutcome(ae)).Inc()
		return nil, ae
	}
	defer hr.Body.Close()
	limit := int64(f.ep.MaxResponseBytes)
	data, err := io.ReadAll(io.LimitReader(hr.Body, limit+1))
	m.latency.WithLabelValues(f.label).Observe(time.Since(start).Seconds())
	if err != nil {
		// The connection broke or timed out mid-response (a body cut short
		// with a Content-Length or chunked encoding lands here): may heal.
		ae := netFailure(err, actx, u, "reading response: ")
		m.requests.WithLabelValues(f.label, requestOutcome(ae)).Inc()
		return nil, ae
	}
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		m.requests.WithLabelValues(f.label, "http_error").Inc()
		return nil, statusFailure(hr.StatusCode, fmt.Errorf("POST %s: HTTP %d: %s", u, hr.StatusCode, snippet(data)))
	}
	if int64(len(data)) > limit {
		m.requests.WithLabelValues(f.label, "bad_response").Inc()
		m.badResponses.WithLabelValues(f.label, reasonTooLarge).Inc()
		return nil, &attemptError{err: badf(reasonTooLarge, "POST %s: body exceeds MaxResponseBytes %d", u, limit), reason: failBadResponse}
	}
	if ct := hr.Header.Get("Content-Type"); ct != "" && !acceptedContentType(ct) {
		m.requests.WithLabelValues(f.label, "bad_response").Inc()
		m.badResponses.WithLabelValues(f.label, reasonContentType).Inc()
		return nil, &attemptError{err: badf(reasonContentType, "POST %s: Content-Type %q, want application/octet-stream", u, ct), reason: failBadResponse}
	}
	resp, err := decodeResponse(data, states)
	if err != nil {
		reason := reasonProtobuf
		var re *responseError
		if errors.As(err, &re) {
			reason = re.reason
		}
		m.requests.WithLabelValues(f.label, "bad_response").Inc()
		m.badResponses.WithLabelValues(f.label, reason).Inc()
		return nil, &attemptError{err: fmt.Errorf("POST %s: %w", u, err), reason: failBadResponse}
	}
	m.requests.WithLabelValues(f.label, "ok").Inc()
	return resp, nil
}

// requestOutcome is the shardfn_remote_requests_total outcome of a
// network failure.
func requestOutcome(ae *attemptError) string {
	if ae.reason == failTimeout {
		return "timeout"
	}
	return "network"
}

// statusFailure classifies a non-2xx answer: 408, 429 and every 5xx may
// heal (a restarting or overloaded service); any other status will not get
// better by asking again.
func statusFailure(code int, err error) *attemptError {
	switch {
	case code == http.StatusRequestTimeout:
		return &attemptError{err: err, retry: true, reason: failHTTP408}
	case code == http.StatusTooManyRequests:
		return &attemptError{err: err, retry: true, reason: failHTTP429}
	case code >= 500:
		return &attemptError{err: err, retry: true, reason: failHTTP5xx}
	}
	return &attemptError{err: err, reason: failHTTPStatus}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func acceptedContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case "application/octet-stream", "application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf":
		return true
	}
	return false
}

func snippet(b []byte) string {
	const max = 200
	s := string(b)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// url returns the request URL for a function type name.
func (f *Function) url(typeName string) (string, error) {
	if v, ok := f.urls.Load(typeName); ok {
		return v.(string), nil
	}
	raw := f.ep.URL(url.PathEscape(typeName))
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("remote: %s: URL %q: %w", f.label, raw, err)
	}
	if f.unix {
		_, path, _ := splitUnixPath(u.Path)
		u.Scheme = strings.TrimSuffix(u.Scheme, "+unix")
		u.Host = "localhost"
		u.Path = path
	}
	s := u.String()
	f.urls.Store(typeName, s)
	return s, nil
}
