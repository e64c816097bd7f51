package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
)

// ErrClosed is the failure of calls made after, or aborted by, Client.Close.
// It wraps engine.ErrAbandoned: the engine leaves such a batch's messages
// for its next start instead of dead-lettering them.
var ErrClosed = fmt.Errorf("remote: client closed: %w", engine.ErrAbandoned)

// Options configure a Client. The zero value is usable.
type Options struct {
	// Workers is the size of the goroutine pool that runs remote calls, which
	// is also the most HTTP attempts in flight over all endpoints together;
	// further calls queue (per endpoint, FIFO). A call waiting to be retried
	// holds no worker. Default 1024. Range 1..1<<20.
	Workers int
	// UserAgent is sent with every request. Default "shardfn".
	UserAgent string
	// Logger receives one line per batch that fails for good, and one line
	// when an endpoint becomes stuck and when it stops being stuck (never
	// one per attempt). Default slog.Default().
	Logger *slog.Logger
	// Seed seeds the retry jitter; 0 uses a time-based seed.
	Seed uint64
	// StuckAfter is how long a batch must have been failing before its
	// endpoint counts as stuck (Health, the shardfn_remote_stuck gauge, a
	// log line). Default 1s.
	StuckAfter time.Duration
}

// EnsureDefaults fills in zero fields.
func (o *Options) EnsureDefaults() {
	if o.Workers == 0 {
		o.Workers = 1024
	}
	if o.UserAgent == "" {
		o.UserAgent = "shardfn"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StuckAfter == 0 {
		o.StuckAfter = time.Second
	}
}

// Validate reports a bad option.
func (o *Options) Validate() error {
	if o.Workers < 1 || o.Workers > 1<<20 {
		return fmt.Errorf("remote: Options.Workers %d out of range 1..%d", o.Workers, 1<<20)
	}
	if o.StuckAfter < 0 {
		return fmt.Errorf("remote: Options.StuckAfter %v must not be negative", o.StuckAfter)
	}
	return nil
}

// probeAfter is the number of consecutive failed attempts (failures that may
// heal) after which an endpoint is treated as down: it gets one attempt at a
// time (a probe) until an attempt succeeds, so that a dead endpoint holds at
// most one pool worker and is not hammered by every waiting batch at once.
const probeAfter = 3

// Client runs remote calls for any number of endpoints on one bounded
// goroutine pool and owns their HTTP connections, metrics and health. It is
// safe for concurrent use. Close it after the engine that uses its
// functions is closed.
type Client struct {
	opts    Options
	pool    *ants.Pool
	ctx     context.Context
	cancel  context.CancelFunc
	metrics *metrics
	wg      sync.WaitGroup // pool tasks and pending retry timers

	mu struct {
		sync.Mutex
		closed  bool
		running int // tasks in the pool (≤ opts.Workers)
		rr      int // round-robin position in fns
		rng     uint64
		fns     []*Function
	}
}

// NewClient starts a Client.
func NewClient(opts Options) (*Client, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	pool, err := ants.NewPool(opts.Workers, ants.WithPreAlloc(false), ants.WithNonblocking(false))
	if err != nil {
		return nil, fmt.Errorf("remote: worker pool: %w", err)
	}
	c := &Client{opts: opts, pool: pool, metrics: newMetrics()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.rng = opts.Seed
	if c.mu.rng == 0 {
		c.mu.rng = uint64(time.Now().UnixNano()) | 1
	}
	return c, nil
}

// Collectors returns the client's Prometheus metrics, for registration by
// the server.
func (c *Client) Collectors() []prometheus.Collector { return c.metrics.collectors() }

// Close ends every call that has not finished with ErrClosed (which wraps
// engine.ErrAbandoned, so an engine still running leaves their messages for
// its next start rather than dead-lettering them): queued calls and calls
// waiting for a retry at once, attempts in flight by cancelling them. It
// waits for the pool to drain and releases the HTTP connections. Close the
// engine first: it drains its own remote calls (calls to an endpoint that is
// down give up their batches as the engine closes).
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	var dropped []*call
	for _, f := range c.mu.fns {
		dropped = append(dropped, f.queue...)
		f.queue = nil
		c.metrics.queued.WithLabelValues(f.label).Set(0)
		for k := range f.h.retrying {
			if k.timer != nil && k.timer.Stop() {
				k.timer = nil
				c.wg.Done() // the timer's
				dropped = append(dropped, k)
			}
		}
	}
	var logs []transition
	for _, k := range dropped {
		if tr := k.f.finishLocked(k, outcomeAbandoned); tr.kind != 0 {
			logs = append(logs, tr)
		}
	}
	fns := c.mu.fns
	c.mu.Unlock()
	c.cancel()
	for _, tr := range logs {
		tr.log(c.opts.Logger)
	}
	for _, k := range dropped {
		k.done(&engine.RemoteResult{Err: ErrClosed})
	}
	c.wg.Wait()
	c.pool.Release()
	for _, f := range fns {
		f.transport.CloseIdleConnections()
	}
	return nil
}

// Function returns a RemoteFunction that calls ep. Functions of one Client
// share its pool; each has its own connection pool, concurrency limit and
// health.
func (c *Client) Function(ep Endpoint) (*Function, error) {
	if err := ep.validate(); err != nil {
		return nil, err
	}
	f := &Function{c: c, ep: ep, label: ep.Pattern()}
	f.h.retrying = map[*call]struct{}{}
	f.h.active = map[*call]struct{}{}
	f.h.watched = map[<-chan struct{}]struct{}{}
	dialer := &net.Dialer{Timeout: ep.ConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   ep.MaxConcurrency,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: ep.ReadTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	u, _ := url.Parse(strings.ReplaceAll(ep.URLTemplate, "{function.name}", "x"))
	if strings.HasSuffix(u.Scheme, "+unix") {
		sock, _, _ := splitUnixPath(u.Path)
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		f.unix = true
	}
	f.transport = tr
	f.http = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, ErrClosed
	}
	c.mu.fns = append(c.mu.fns, f)
	c.metrics.stuck.WithLabelValues(f.label).Set(0)
	c.metrics.retrying.WithLabelValues(f.label).Set(0)
	return f, nil
}

func (ep *Endpoint) validate() error {
	if ep.Namespace == "" || ep.Type == "" {
		return fmt.Errorf("%w: endpoint needs a namespace and a type", ErrModule)
	}
	if err := checkURLTemplate(ep.URLTemplate); err != nil {
		return fmt.Errorf("%w: %v", ErrModule, err)
	}
	switch {
	case ep.CallTimeout <= 0, ep.ConnectTimeout <= 0, ep.ReadTimeout <= 0, ep.WriteTimeout <= 0:
		return fmt.Errorf("%w: %s: timeouts must be positive", ErrModule, ep.Pattern())
	case ep.MaxRetries < 0:
		return fmt.Errorf("%w: %s: negative MaxRetries (0 means no bound)", ErrModule, ep.Pattern())
	case ep.GiveUpAfter < 0:
		return fmt.Errorf("%w: %s: negative GiveUpAfter (0 means never)", ErrModule, ep.Pattern())
	case ep.RetryBackoff <= 0 || ep.MaxRetryBackoff < ep.RetryBackoff:
		return fmt.Errorf("%w: %s: want 0 < RetryBackoff <= MaxRetryBackoff", ErrModule, ep.Pattern())
	case ep.MaxConcurrency <= 0, ep.MaxRequestBytes <= 0, ep.MaxResponseBytes <= 0:
		return fmt.Errorf("%w: %s: MaxConcurrency, MaxRequestBytes and MaxResponseBytes must be positive", ErrModule, ep.Pattern())
	}
	return nil
}

// Specs returns one engine.FunctionSpec per endpoint of the module (Type
// "*" for namespace wildcards), each served by a Function of c.
func (m *Module) Specs(c *Client) ([]engine.FunctionSpec, error) {
	specs := make([]engine.FunctionSpec, 0, len(m.Endpoints))
	for _, ep := range m.Endpoints {
		f, err := c.Function(ep)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ep.Source, err)
		}
		specs = append(specs, engine.FunctionSpec{Namespace: ep.Namespace, Type: ep.Type, Remote: f})
	}
	return specs, nil
}

// task is one call handed to a pool worker.
type task struct {
	f *Function
	k *call
}

// enqueue queues k on f and starts pool tasks while there is room. It never
// blocks for long: Submit is only called while fewer than Workers tasks run.
func (c *Client) enqueue(f *Function, k *call) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		k.done(&engine.RemoteResult{Err: ErrClosed})
		return
	}
	start := c.queueLocked(f, k)
	c.mu.Unlock()
	c.submitAll(start)
}

// queueLocked puts k at the end of f's queue and dispatches what can run
// now; the caller submits that once it has unlocked c.mu.
func (c *Client) queueLocked(f *Function, k *call) []task {
	f.queue = append(f.queue, k)
	c.metrics.queued.WithLabelValues(f.label).Set(float64(len(f.queue)))
	return c.dispatchLocked(nil)
}

// dispatchLocked pops runnable calls while the pool has room, counting each
// as a running task.
func (c *Client) dispatchLocked(start []task) []task {
	for !c.mu.closed && c.mu.running < c.opts.Workers {
		nf, nk := c.nextLocked()
		if nk == nil {
			break
		}
		c.mu.running++
		c.wg.Add(1) // under mu, so Close's Wait never races an Add
		start = append(start, task{nf, nk})
	}
	return start
}

func (c *Client) submitAll(start []task) {
	for _, t := range start {
		c.submit(t.f, t.k)
	}
}

func (c *Client) submit(f *Function, k *call) {
	err := c.pool.Submit(func() { c.worker(f, k) })
	if err != nil {
		// The pool is released only by Close after wg drains, so this is
		// unexpected; fail the call rather than lose it.
		c.mu.Lock()
		c.releaseLocked(f)
		c.mu.running--
		tr := f.finishLocked(k, outcomeFailed)
		c.mu.Unlock()
		c.wg.Done()
		tr.log(c.opts.Logger)
		k.done(&engine.RemoteResult{Err: fmt.Errorf("remote: pool: %w", err)})
	}
}

// worker runs calls until no runnable one is left. A call that must wait
// for a retry leaves the worker (a timer queues it again).
func (c *Client) worker(f *Function, k *call) {
	defer c.wg.Done()
	for k != nil {
		res, wait := f.step(k)
		f, k = c.after(f, k, res, wait)
	}
}

// after ends a worker's turn on k: it delivers res, or schedules the retry
// after wait; then it picks the next runnable call for this worker (and
// starts more workers if capacity grew).
func (c *Client) after(f *Function, k *call, res *engine.RemoteResult, wait time.Duration) (*Function, *call) {
	c.mu.Lock()
	c.releaseLocked(f)
	if res == nil {
		if abandon := c.abandonLocked(k); abandon != nil {
			res = abandon
		} else {
			c.scheduleRetryLocked(f, k, wait)
		}
	}
	var tr transition
	if res != nil {
		tr = f.finishLocked(k, outcomeOf(res))
	}
	var nf *Function
	var nk *call
	if !c.mu.closed {
		nf, nk = c.nextLocked()
	}
	if nk == nil {
		c.mu.running--
	}
	start := c.dispatchLocked(nil)
	c.mu.Unlock()
	c.submitAll(start)
	tr.log(c.opts.Logger)
	if res != nil {
		k.done(res)
	}
	return nf, nk
}

// abandonLocked returns the result of a call that must not be retried any
// more because the client or the engine is closing, or nil.
func (c *Client) abandonLocked(k *call) *engine.RemoteResult {
	if c.mu.closed {
		return &engine.RemoteResult{Err: ErrClosed}
	}
	if closed(k.b.Closing) {
		return k.f.abandoned(k)
	}
	return nil
}

// scheduleRetryLocked arms k's retry timer. The timer counts in wg until
// it fires or Close stops it.
func (c *Client) scheduleRetryLocked(f *Function, k *call, wait time.Duration) {
	c.wg.Add(1)
	k.timer = time.AfterFunc(wait, func() { c.retryDue(k) })
	if ch := k.b.Closing; ch != nil {
		if _, ok := f.h.watched[ch]; !ok {
			f.h.watched[ch] = struct{}{}
			c.wg.Add(1)
			go c.watchClosing(f, ch)
		}
	}
}

// retryDue runs when k's backoff has passed: k queues again.
func (c *Client) retryDue(k *call) {
	defer c.wg.Done()
	f := k.f
	c.mu.Lock()
	k.timer = nil
	if res := c.abandonLocked(k); res != nil {
		tr := f.finishLocked(k, outcomeAbandoned)
		c.mu.Unlock()
		tr.log(c.opts.Logger)
		k.done(res)
		return
	}
	start := c.queueLocked(f, k)
	c.mu.Unlock()
	c.submitAll(start)
}

// watchClosing waits for an engine's Closing channel and then gives up the
// batches of that engine that are failing: those waiting for a retry end at
// once, and attempts in flight that follow a failure are cancelled. (Calls
// queued or running a first attempt against a healthy endpoint finish
// normally.) One goroutine per engine and function, not per call.
func (c *Client) watchClosing(f *Function, ch <-chan struct{}) {
	defer c.wg.Done()
	select {
	case <-ch:
	case <-c.ctx.Done():
		return
	}
	c.mu.Lock()
	delete(f.h.watched, ch)
	var ended []*call
	var logs []transition
	for k := range f.h.retrying {
		if k.b.Closing != ch {
			continue
		}
		if k.timer != nil && k.timer.Stop() {
			k.timer = nil
			c.wg.Done() // the timer's
			ended = append(ended, k)
		}
	}
	for k := range f.h.active {
		if k.b.Closing == ch && k.cancel != nil && (k.failures > 0 || f.h.consecutive > 0) {
			k.cancel()
		}
	}
	for _, k := range ended {
		if tr := f.finishLocked(k, outcomeAbandoned); tr.kind != 0 {
			logs = append(logs, tr)
		}
	}
	c.mu.Unlock()
	for _, tr := range logs {
		tr.log(c.opts.Logger)
	}
	for _, k := range ended {
		k.done(f.abandoned(k))
	}
}

func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// nextLocked pops the next runnable call (a queued call of a function below
// its concurrency limit), round robin over functions. The scan is linear in
// the number of endpoints, which is small.
func (c *Client) nextLocked() (*Function, *call) {
	n := len(c.mu.fns)
	for i := 0; i < n; i++ {
		f := c.mu.fns[(c.mu.rr+i)%n]
		if len(f.queue) == 0 || f.running >= f.limitLocked() {
			continue
		}
		c.mu.rr = (c.mu.rr + i + 1) % n
		k := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		if len(f.queue) == 0 {
			f.queue = nil
		}
		f.running++
		c.metrics.queued.WithLabelValues(f.label).Set(float64(len(f.queue)))
		c.metrics.inflight.WithLabelValues(f.label).Set(float64(f.running))
		return f, k
	}
	return nil, nil
}

func (c *Client) releaseLocked(f *Function) {
	f.running--
	c.metrics.inflight.WithLabelValues(f.label).Set(float64(f.running))
}

// jitter returns a pseudo-random duration in [d/2, d].
func (c *Client) jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	c.mu.Lock()
	// xorshift64*
	x := c.mu.rng
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	c.mu.rng = x
	c.mu.Unlock()
	r := x * 2685821657736338717
	half := d / 2
	return half + time.Duration(r%uint64(d-half+1))
}

// ErrGaveUp is wrapped by the Err of a batch dead-lettered because it kept
// failing past its endpoint's GiveUpAfter or MaxRetries.
var ErrGaveUp = errors.New("remote: gave up retrying")
