package remote

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/shardfn/shardfn/engine"
)

// EndpointHealth is the state of one endpoint pattern's calls (see
// Client.Health).
type EndpointHealth struct {
	// Endpoint is the function pattern, "namespace/type" or "namespace/*".
	Endpoint string
	// URL is the endpoint's urlPathTemplate.
	URL string
	// Stuck is set while at least one batch has been failing for
	// Options.StuckAfter or longer and is still being retried: the messages
	// of its address wait (in order) until the endpoint answers.
	Stuck bool
	// StuckSince is when the first failing attempt of the batch that made
	// the endpoint stuck started (zero unless Stuck).
	StuckSince time.Time
	// ConsecutiveFailures counts failed attempts (failures that may heal)
	// since the endpoint's last successful answer. From 3 on the endpoint
	// gets one attempt at a time until one succeeds.
	ConsecutiveFailures int
	// LastError and LastFailure describe the most recent failed attempt
	// (kept after recovery, for the record).
	LastError   string
	LastFailure time.Time
	// RetryingBatches are batches that have failed at least once and wait
	// for, or run, their next attempt.
	RetryingBatches int
	// QueuedBatches wait for the concurrency limit or a pool worker;
	// InFlight are attempts running now.
	QueuedBatches int
	InFlight      int
}

// Health returns the state of every endpoint of the client, in the order
// they were added. It is cheap enough for a health probe.
func (c *Client) Health() []EndpointHealth {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EndpointHealth, 0, len(c.mu.fns))
	for _, f := range c.mu.fns {
		out = append(out, f.healthLocked())
	}
	return out
}

// Stuck returns the endpoints that are stuck now (see EndpointHealth.Stuck).
func (c *Client) Stuck() []EndpointHealth {
	var out []EndpointHealth
	for _, h := range c.Health() {
		if h.Stuck {
			out = append(out, h)
		}
	}
	return out
}

func (f *Function) healthLocked() EndpointHealth {
	h := EndpointHealth{
		Endpoint:            f.label,
		URL:                 f.ep.URLTemplate,
		Stuck:               f.h.stuck,
		ConsecutiveFailures: f.h.consecutive,
		LastError:           f.h.lastErr,
		LastFailure:         f.h.lastFailure,
		RetryingBatches:     len(f.h.retrying),
		QueuedBatches:       len(f.queue),
		InFlight:            f.running,
	}
	if f.h.stuck {
		h.StuckSince = f.h.stuckSince
	}
	return h
}

// endpointState is a Function's health; guarded by c.mu.
type endpointState struct {
	consecutive int
	lastErr     string
	lastFailure time.Time
	stuck       bool
	stuckSince  time.Time
	retrying    map[*call]struct{}           // failed at least once, not finished
	active      map[*call]struct{}           // attempt in flight
	watched     map[<-chan struct{}]struct{} // engines' Closing channels with a watcher
}

// limitLocked is the number of attempts the endpoint may have in flight:
// MaxConcurrency, or one (a probe) while it is down.
func (f *Function) limitLocked() int {
	if f.h.consecutive >= probeAfter {
		return 1
	}
	return f.ep.MaxConcurrency
}

// beginAttempt makes the context of k's next attempt and registers it, so
// that a closing engine can cancel it. It returns a result instead when
// the batch must not be attempted again: the client is closed, or the
// engine is closing and either this batch or its endpoint is failing.
func (f *Function) beginAttempt(k *call) (context.Context, context.CancelFunc, *engine.RemoteResult) {
	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed || c.ctx.Err() != nil {
		return nil, nil, &engine.RemoteResult{Err: ErrClosed}
	}
	if closed(k.b.Closing) && (k.failures > 0 || f.h.consecutive > 0) {
		return nil, nil, f.abandoned(k)
	}
	ctx, cancel := context.WithTimeout(c.ctx, f.attemptTimeout())
	k.cancel = cancel
	f.h.active[k] = struct{}{}
	return ctx, cancel, nil
}

// endAttempt unregisters an attempt that neither succeeded nor failed (it
// was aborted by closing).
func (f *Function) endAttempt(k *call) {
	f.c.mu.Lock()
	k.cancel = nil
	delete(f.h.active, k)
	f.c.mu.Unlock()
}

// succeeded records a successful answer: the endpoint is up. When it was
// down, the batches waiting for a retry are queued at once instead of
// sleeping out their backoff.
func (f *Function) succeeded(k *call) {
	c := f.c
	c.mu.Lock()
	k.cancel = nil
	delete(f.h.active, k)
	k.backoff = f.ep.RetryBackoff
	wasDown := f.h.consecutive >= probeAfter
	f.h.consecutive = 0
	var start []task
	if wasDown && !c.mu.closed {
		for r := range f.h.retrying {
			if r.timer != nil && r.timer.Stop() {
				r.timer = nil
				c.wg.Done() // the timer's
				f.queue = append(f.queue, r)
			}
		}
		c.metrics.queued.WithLabelValues(f.label).Set(float64(len(f.queue)))
		start = c.dispatchLocked(nil)
	}
	c.mu.Unlock()
	c.submitAll(start)
}

// endFailedAttempt records a failed attempt of k that started at start.
// k's failure fields are written under the lock: a closing engine's
// watcher reads them.
func (f *Function) endFailedAttempt(k *call, ae *attemptError, start, now time.Time) transition {
	c := f.c
	c.metrics.failures.WithLabelValues(f.label, ae.reason).Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	k.failures++
	k.lastErr = ae
	if k.failingSince.IsZero() {
		k.failingSince = start
	}
	k.cancel = nil
	delete(f.h.active, k)
	f.h.lastErr = ae.Error()
	f.h.lastFailure = now
	if !ae.retry {
		return transition{} // the endpoint answered; the batch ends now
	}
	f.h.consecutive++
	if _, ok := f.h.retrying[k]; !ok {
		f.h.retrying[k] = struct{}{}
		c.metrics.retrying.WithLabelValues(f.label).Set(float64(len(f.h.retrying)))
	}
	if f.h.stuck || now.Sub(k.failingSince) < c.opts.StuckAfter {
		return transition{}
	}
	f.h.stuck = true
	f.h.stuckSince = k.failingSince
	c.metrics.stuck.WithLabelValues(f.label).Set(1)
	return transition{kind: becameStuck, h: f.healthLocked()}
}

// Outcomes of a batch (the "result" label of shardfn_remote_batches_total).
const (
	outcomeOK         = "ok"
	outcomeIncomplete = "incomplete"
	outcomeFailed     = "failed"    // dead-lettered
	outcomeAbandoned  = "abandoned" // left for the engine's next start
)

func outcomeOf(r *engine.RemoteResult) string {
	switch {
	case r.Err != nil && errors.Is(r.Err, engine.ErrAbandoned):
		return outcomeAbandoned
	case r.Err != nil:
		return outcomeFailed
	case len(r.MissingSpecs) > 0:
		return outcomeIncomplete
	}
	return outcomeOK
}

// finishLocked accounts for the end of k. The endpoint stops being stuck
// when its last retrying batch ends.
func (f *Function) finishLocked(k *call, outcome string) transition {
	c := f.c
	c.metrics.batches.WithLabelValues(f.label, outcome).Inc()
	delete(f.h.active, k)
	if _, ok := f.h.retrying[k]; !ok {
		return transition{}
	}
	delete(f.h.retrying, k)
	c.metrics.retrying.WithLabelValues(f.label).Set(float64(len(f.h.retrying)))
	if !f.h.stuck || len(f.h.retrying) > 0 {
		return transition{}
	}
	f.h.stuck = false
	c.metrics.stuck.WithLabelValues(f.label).Set(0)
	tr := transition{kind: noLongerStuck, h: f.healthLocked(), outcome: outcome}
	tr.h.StuckSince = f.h.stuckSince
	return tr
}

// transition is a change of an endpoint's stuck state, logged once outside
// the client's lock.
type transition struct {
	kind    int
	h       EndpointHealth
	outcome string
}

const (
	becameStuck = 1 + iota
	noLongerStuck
)

func (t transition) log(l *slog.Logger) {
	switch t.kind {
	case becameStuck:
		l.Warn("remote endpoint stuck: its batches are retried until it answers; later messages of their addresses wait",
			"endpoint", t.h.Endpoint, "url", t.h.URL, "failing_since", t.h.StuckSince,
			"consecutive_failures", t.h.ConsecutiveFailures, "retrying_batches", t.h.RetryingBatches, "last_error", t.h.LastError)
	case noLongerStuck:
		how := "recovered: the endpoint answered"
		switch t.outcome {
		case outcomeFailed:
			how = "no longer stuck: the last failing batch was dead-lettered"
		case outcomeAbandoned:
			how = "no longer stuck: the last failing batch was left for the next start"
		}
		l.Info("remote endpoint "+how,
			"endpoint", t.h.Endpoint, "url", t.h.URL, "stuck_for", time.Since(t.h.StuckSince).Round(time.Millisecond).String(),
			"last_error", t.h.LastError)
	}
}
