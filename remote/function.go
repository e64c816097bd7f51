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
}

var _ engine.RemoteFunction = (*Function)(nil)

// Endpoint returns the function's endpoint settings.
func (f *Function) Endpoint() Endpoint { return f.ep }

// InvokeBatch queues the batch and returns at once; the call runs on the
// client's pool (never on the caller's goroutine), within the endpoint's
// concurrency limit, and done is called exactly once from a pool goroutine
// (or from the caller's goroutine if the client is closed).
func (f *Function) InvokeBatch(b *engine.RemoteBatch, done func(*engine.RemoteResult)) {
	f.c.enqueue(f, &call{b: b, done: done})
}

// run performs one batch: one request, or several sequential sub-requests
// when the encoded batch exceeds MaxRequestBytes, each retried per policy.
// It returns the merged result, or a result with Err once retries or the
// call timeout are exhausted.
func (f *Function) run(b *engine.RemoteBatch) *engine.RemoteResult {
	ctx, cancel := context.WithTimeout(f.c.ctx, f.ep.CallTimeout)
	defer cancel()
	res, err := f.runBatch(ctx, b)
	m := f.c.metrics
	switch {
	case err != nil:
		if f.c.ctx.Err() != nil {
			err = fmt.Errorf("%w: %v", ErrClosed, err)
		}
		m.batches.WithLabelValues(f.label, "failed").Inc()
		f.c.opts.Logger.Warn("remote: batch failed for good; its messages go to dead-letters",
			"endpoint", f.label, "target", b.Target.String(), "invocations", len(b.Invocations), "err", err)
		return &engine.RemoteResult{Err: err}
	case len(res.MissingSpecs) > 0:
		m.batches.WithLabelValues(f.label, "incomplete").Inc()
	default:
		m.batches.WithLabelValues(f.label, "ok").Inc()
	}
	return res
}

func (f *Function) runBatch(ctx context.Context, b *engine.RemoteBatch) (*engine.RemoteResult, error) {
	u, err := f.url(b.Target.Type)
	if err != nil {
		return nil, err
	}
	req := buildRequest(b.Target, b.States, b.Invocations)
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("remote: encoding ToFunction: %w", err)
	}
	if len(body) <= f.ep.MaxRequestBytes || len(b.Invocations) <= 1 {
		resp, err := f.exchange(ctx, u, body, b.States)
		if err != nil {
			return nil, err
		}
		return resp.toResult(), nil
	}
	return f.runSplit(ctx, u, b)
}

// runSplit sends the invocations in sequential sub-requests that each fit
// the byte budget (a single invocation larger than the budget goes alone).
// The state mutations of each answer are applied to the state sent with the
// next sub-request, so the function sees exactly what one big request would
// have shown it. Nothing is returned to the engine before every sub-request
// has succeeded: the merged result is one RemoteResult, applied by the
// engine as one atomic effect record; a failure of any sub-request fails the
// whole batch (dead letter), and an incomplete-context answer discards the
// earlier sub-results and asks for the whole batch again.
func (f *Function) runSplit(ctx context.Context, u string, b *engine.RemoteBatch) (*engine.RemoteResult, error) {
	states := make([]engine.StateValue, len(b.States))
	copy(states, b.States)
	var mg merger
	for i := 0; i < len(b.Invocations); {
		size := proto.Size(buildRequest(b.Target, states, nil))
		j := i
		for j < len(b.Invocations) {
			s := invocationSize(b.Invocations[j])
			if j > i && size+s > f.ep.MaxRequestBytes {
				break
			}
			size += s
			j++
		}
		body, err := proto.Marshal(buildRequest(b.Target, states, b.Invocations[i:j]))
		if err != nil {
			return nil, fmt.Errorf("remote: encoding ToFunction: %w", err)
		}
		f.c.metrics.splits.WithLabelValues(f.label).Inc()
		resp, err := f.exchange(ctx, u, body, states)
		if err != nil {
			return nil, fmt.Errorf("sub-request for invocations %d..%d of %d: %w", i, j-1, len(b.Invocations), err)
		}
		if len(resp.missing) > 0 {
			return &engine.RemoteResult{MissingSpecs: resp.missing}, nil
		}
		mg.add(&resp.result)
		for _, mu := range resp.result.Mutations {
			for k := range states {
				if states[k].Spec.Name == mu.Name {
					states[k].Present = !mu.Delete
					states[k].Value = mu.Value.Value
				}
			}
		}
		i = j
	}
	return &mg.res, nil
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

// attemptError is a failed attempt; retry says whether policy allows
// another one.
type attemptError struct {
	err   error
	retry bool
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// exchange sends one request body, retrying failed attempts with
// exponential backoff and jitter, up to MaxRetries retries and within the
// call deadline of ctx.
func (f *Function) exchange(ctx context.Context, u string, body []byte, states []engine.StateValue) (*response, error) {
	m := f.c.metrics
	backoff := f.ep.RetryBackoff
	for attempt := 0; ; attempt++ {
		resp, err := f.attempt(ctx, u, body, states)
		if err == nil {
			return resp, nil
		}
		var ae *attemptError
		if !errors.As(err, &ae) || !ae.retry {
			return nil, fmt.Errorf("remote: %s: attempt %d failed, not retryable: %w", f.label, attempt+1, err)
		}
		if attempt >= f.ep.MaxRetries {
			return nil, fmt.Errorf("remote: %s: giving up after %d attempts: %w", f.label, attempt+1, err)
		}
		if f.c.ctx.Err() != nil {
			return nil, fmt.Errorf("remote: %s: aborted by Close after %d attempts: %w", f.label, attempt+1, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("remote: %s: call timeout %v exhausted after %d attempts: %w", f.label, f.ep.CallTimeout, attempt+1, err)
		}
		wait := f.c.jitter(backoff)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, fmt.Errorf("remote: %s: call timeout %v leaves no time for retry %d: %w", f.label, f.ep.CallTimeout, attempt+1, err)
		}
		m.retries.WithLabelValues(f.label).Inc()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("remote: %s: call timeout or close during backoff after %d attempts: %w", f.label, attempt+1, err)
		}
		backoff *= 2
		if backoff > f.ep.MaxRetryBackoff {
			backoff = f.ep.MaxRetryBackoff
		}
	}
}

// attempt performs one HTTP exchange and validates the answer.
func (f *Function) attempt(ctx context.Context, u string, body []byte, states []engine.StateValue) (*response, error) {
	m := f.c.metrics
	actx, cancel := context.WithTimeout(ctx, f.ep.WriteTimeout+f.ep.ReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("remote: %s: building request: %w", f.label, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("User-Agent", f.c.opts.UserAgent)
	start := time.Now()
	hr, err := f.http.Do(req)
	if err != nil {
		outcome := "network"
		if isTimeout(err) || actx.Err() != nil {
			outcome = "timeout"
		}
		m.requests.WithLabelValues(f.label, outcome).Inc()
		return nil, &attemptError{err: fmt.Errorf("POST %s: %w", u, err), retry: true}
	}
	defer hr.Body.Close()
	limit := int64(f.ep.MaxResponseBytes)
	data, err := io.ReadAll(io.LimitReader(hr.Body, limit+1))
	m.latency.WithLabelValues(f.label).Observe(time.Since(start).Seconds())
	if err != nil {
		outcome := "network"
		if isTimeout(err) || actx.Err() != nil {
			outcome = "timeout"
		}
		m.requests.WithLabelValues(f.label, outcome).Inc()
		return nil, &attemptError{err: fmt.Errorf("POST %s: reading response: %w", u, err), retry: true}
	}
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		m.requests.WithLabelValues(f.label, "http_error").Inc()
		return nil, &attemptError{
			err:   fmt.Errorf("POST %s: HTTP %d: %s", u, hr.StatusCode, snippet(data)),
			retry: retryableStatus(hr.StatusCode),
		}
	}
	if int64(len(data)) > limit {
		m.requests.WithLabelValues(f.label, "bad_response").Inc()
		m.badResponses.WithLabelValues(f.label, reasonTooLarge).Inc()
		return nil, &attemptError{err: badf(reasonTooLarge, "POST %s: body exceeds MaxResponseBytes %d", u, limit), retry: true}
	}
	if ct := hr.Header.Get("Content-Type"); ct != "" && !acceptedContentType(ct) {
		m.requests.WithLabelValues(f.label, "bad_response").Inc()
		m.badResponses.WithLabelValues(f.label, reasonContentType).Inc()
		return nil, &attemptError{err: badf(reasonContentType, "POST %s: Content-Type %q, want application/octet-stream", u, ct), retry: true}
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
		return nil, &attemptError{err: fmt.Errorf("POST %s: %w", u, err), retry: true}
	}
	m.requests.WithLabelValues(f.label, "ok").Inc()
	return resp, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// retryableStatus: 408, 429 and every 5xx are retried; other statuses fail
// the batch at once (a 4xx will not get better by asking again).
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
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
