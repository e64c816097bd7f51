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
var ErrClosed = errors.New("remote: client closed")

// Options configure a Client. The zero value is usable.
type Options struct {
	// Workers is the size of the goroutine pool that runs remote calls, which
	// is also the most calls in flight over all endpoints together; further
	// calls queue (per endpoint, FIFO). Default 1024. Range 1..1<<20.
	Workers int
	// UserAgent is sent with every request. Default "shardfn".
	UserAgent string
	// Logger receives one line per batch that fails for good. Default
	// slog.Default().
	Logger *slog.Logger
	// Seed seeds the retry jitter; 0 uses a time-based seed.
	Seed uint64
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
}

// Validate reports a bad option.
func (o *Options) Validate() error {
	if o.Workers < 1 || o.Workers > 1<<20 {
		return fmt.Errorf("remote: Options.Workers %d out of range 1..%d", o.Workers, 1<<20)
	}
	return nil
}

// Client runs remote calls for any number of endpoints on one bounded
// goroutine pool and owns their HTTP connections and metrics. It is safe for
// concurrent use. Close it after the engine that uses its functions is
// closed.
type Client struct {
	opts    Options
	pool    *ants.Pool
	ctx     context.Context
	cancel  context.CancelFunc
	metrics *metrics
	wg      sync.WaitGroup

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

// Close fails queued calls with ErrClosed, aborts in-flight ones (their
// results carry ErrClosed), waits for the pool to drain and releases the
// HTTP connections. Close the engine first: it drains its own in-flight
// remote calls, and an aborted call's batch would be dead-lettered.
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
	}
	fns := c.mu.fns
	c.mu.Unlock()
	c.cancel()
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
// share its pool; each has its own connection pool and concurrency limit.
func (c *Client) Function(ep Endpoint) (*Function, error) {
	if err := ep.validate(); err != nil {
		return nil, err
	}
	f := &Function{c: c, ep: ep, label: ep.Pattern()}
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
		return fmt.Errorf("%w: %s: negative MaxRetries", ErrModule, ep.Pattern())
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

// call is one queued InvokeBatch.
type call struct {
	b    *engine.RemoteBatch
	done func(*engine.RemoteResult)
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
	f.queue = append(f.queue, k)
	c.metrics.queued.WithLabelValues(f.label).Set(float64(len(f.queue)))
	var start []*call
	var startFn []*Function
	for c.mu.running < c.opts.Workers {
		nf, nk := c.nextLocked()
		if nk == nil {
			break
		}
		c.mu.running++
		c.wg.Add(1) // under mu, so Close's Wait never races an Add
		start = append(start, nk)
		startFn = append(startFn, nf)
	}
	c.mu.Unlock()
	for i, nk := range start {
		c.submit(startFn[i], nk)
	}
}

func (c *Client) submit(f *Function, k *call) {
	err := c.pool.Submit(func() { c.worker(f, k) })
	if err != nil {
		// The pool is released only by Close after wg drains, so this is
		// unexpected; fail the call rather than lose it.
		c.wg.Done()
		c.finish(f)
		k.done(&engine.RemoteResult{Err: fmt.Errorf("remote: pool: %w", err)})
	}
}

// worker runs calls until no runnable one is left.
func (c *Client) worker(f *Function, k *call) {
	defer c.wg.Done()
	for k != nil {
		res := f.run(k.b)
		k.done(res)
		f, k = c.finishAndNext(f)
	}
}

// nextLocked pops the next runnable call (a queued call of a function below
// its concurrency limit), round robin over functions. The scan is linear in
// the number of endpoints, which is small.
func (c *Client) nextLocked() (*Function, *call) {
	n := len(c.mu.fns)
	for i := 0; i < n; i++ {
		f := c.mu.fns[(c.mu.rr+i)%n]
		if len(f.queue) == 0 || f.running >= f.ep.MaxConcurrency {
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

func (c *Client) finish(f *Function) {
	c.mu.Lock()
	c.releaseLocked(f)
	c.mu.running--
	c.mu.Unlock()
}

func (c *Client) finishAndNext(f *Function) (*Function, *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(f)
	if !c.mu.closed {
		if nf, nk := c.nextLocked(); nk != nil {
			return nf, nk
		}
	}
	c.mu.running--
	return nil, nil
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
