package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"

	"github.com/shardfn/shardfn/engine"
)

// Engine is what the server needs of the engine; *engine.Engine implements
// it. Every method must be safe for concurrent use.
type Engine interface {
	Send(ctx context.Context, to engine.Address, msg engine.Message, opts ...engine.SendOption) (uint64, error)
	SendBatch(ctx context.Context, msgs []engine.Outgoing) error
	Request(ctx context.Context, to engine.Address, msg engine.Message, opts ...engine.SendOption) (engine.Message, error)
	ReadEgress(ctx context.Context, name string, from uint64, max, maxBytes int, wait time.Duration) ([]engine.EgressRecord, error)
	State(ctx context.Context, addr engine.Address) ([]engine.StateValue, error)
	Ready() bool
	Err() error
}

var _ Engine = (*engine.Engine)(nil)

// Options configure a Server. The zero value is usable: EnsureDefaults fills
// it in.
type Options struct {
	// MaxBodyBytes bounds a request body (one message, or a whole batch);
	// larger bodies are answered 413 without being read. Default 4 MiB.
	MaxBodyBytes int
	// MaxBodyBytesInFlight bounds the bytes of request bodies held at once
	// across all connections, from reading a body until its request is
	// answered. A request whose body does not fit is answered 503 with
	// Retry-After before its body is read. Default 16 x MaxBodyBytes; at
	// least MaxBodyBytes.
	MaxBodyBytesInFlight int64
	// MaxConns bounds the ingress connections open at once; more are
	// answered 503 with Retry-After and closed at accept. MaxConnsPerClient
	// bounds those from one client IP address the same way. Defaults:
	// DefaultConnLimits(FileLimit()), below the file limit, and a quarter
	// of MaxConns.
	MaxConns          int
	MaxConnsPerClient int
	// MaxEgressBytes bounds the records of one egress answer in bytes
	// (each record counted as its source, type and body); a single larger
	// record is still answered alone, so a reader always progresses. The
	// answer's JSON may be up to a third larger (base64 bodies). Default
	// 4 MiB.
	MaxEgressBytes int
	// MaxEgressReads bounds the egress answers read and built at once (each
	// holds its records and their JSON, up to about 2.5 x MaxEgressBytes,
	// or a single larger record); a read beyond it is answered 503 with
	// Retry-After. A long-poll waits without holding one. Default
	// GOMAXPROCS (one per core: building an answer of big records is CPU
	// work).
	MaxEgressReads int
	// MaxWait bounds ?wait= of request-reply and of egress long-polls.
	// Default 60s.
	MaxWait time.Duration
	// MaxBatchMessages bounds the messages of one /batch request. Default
	// 10000.
	MaxBatchMessages int
	// MaxEgressRecords bounds max= of an egress read. Default 10000; a read
	// without max= returns at most 100.
	MaxEgressRecords int
	// ReadTimeout bounds reading one request, headers and body (slow
	// clients are cut off). Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response. Default 30s.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default 60s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line plus headers; larger ones are
	// answered 431. Default 8 KiB.
	MaxHeaderBytes int
	// Concurrency bounds the connections served at once by the ingress.
	// Default 65536.
	Concurrency int
	// DisableStateAPI turns GET /state/... on the admin listener off.
	DisableStateAPI bool
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics, the Go and process
	// collectors, and the engine's collectors (at SetEngine); /metrics
	// serves it. Default: a new registry.
	Registry *prometheus.Registry
	// StuckEndpoints, when set, is asked by every GET /health for the remote
	// function endpoints that are stuck (their batches keep failing and are
	// retried; later messages of those addresses wait). Any answer makes
	// /health 200 with "status":"degraded" and a "stuck_endpoints" list.
	// cmd/engine sets it from remote.Client.Stuck.
	StuckEndpoints func() []StuckEndpoint
}

// StuckEndpoint is one remote function endpoint that /health reports as
// stuck.
type StuckEndpoint struct {
	// Endpoint is the function pattern ("namespace/type" or
	// "namespace/*"); URL its urlPathTemplate.
	Endpoint string
	URL      string
	// Since is when the endpoint started failing.
	Since time.Time
	// ConsecutiveFailures are failed attempts since its last answer;
	// RetryingBatches the batches waiting for it.
	ConsecutiveFailures int
	RetryingBatches     int
	// LastError describes the last failed attempt.
	LastError string
}

// EnsureDefaults fills in zero fields.
func (o *Options) EnsureDefaults() {
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MaxBodyBytesInFlight == 0 {
		o.MaxBodyBytesInFlight = 16 * int64(o.MaxBodyBytes)
	}
	if o.MaxConns == 0 {
		o.MaxConns, _ = DefaultConnLimits(FileLimit())
	}
	if o.MaxConnsPerClient == 0 {
		o.MaxConnsPerClient = max(o.MaxConns/4, 1)
	}
	if o.MaxEgressBytes == 0 {
		o.MaxEgressBytes = 4 << 20
	}
	if o.MaxEgressReads == 0 {
		o.MaxEgressReads = runtime.GOMAXPROCS(0)
	}
	if o.MaxWait == 0 {
		o.MaxWait = 60 * time.Second
	}
	if o.MaxBatchMessages == 0 {
		o.MaxBatchMessages = 10000
	}
	if o.MaxEgressRecords == 0 {
		o.MaxEgressRecords = 10000
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 8 << 10
	}
	if o.Concurrency == 0 {
		o.Concurrency = 65536
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

// Validate reports a bad option.
func (o *Options) Validate() error {
	switch {
	case o.MaxBodyBytes < 1:
		return fmt.Errorf("httpapi: MaxBodyBytes %d must be positive", o.MaxBodyBytes)
	case o.MaxBodyBytesInFlight < int64(o.MaxBodyBytes):
		return fmt.Errorf("httpapi: MaxBodyBytesInFlight %d is below MaxBodyBytes %d: a body of the largest size could never be read", o.MaxBodyBytesInFlight, o.MaxBodyBytes)
	case o.MaxConns < 1, o.MaxConnsPerClient < 1:
		return fmt.Errorf("httpapi: MaxConns %d and MaxConnsPerClient %d must be positive", o.MaxConns, o.MaxConnsPerClient)
	case o.MaxEgressBytes < 1:
		return fmt.Errorf("httpapi: MaxEgressBytes %d must be positive", o.MaxEgressBytes)
	case o.MaxEgressReads < 1:
		return fmt.Errorf("httpapi: MaxEgressReads %d must be positive", o.MaxEgressReads)
	case o.MaxWait < 0, o.ReadTimeout < 0, o.WriteTimeout < 0, o.IdleTimeout < 0:
		return errors.New("httpapi: durations must not be negative")
	case o.MaxBatchMessages < 1, o.MaxEgressRecords < 1:
		return errors.New("httpapi: MaxBatchMessages and MaxEgressRecords must be positive")
	case o.MaxHeaderBytes < 1024:
		return fmt.Errorf("httpapi: MaxHeaderBytes %d is below 1024", o.MaxHeaderBytes)
	case o.Concurrency < 1:
		return fmt.Errorf("httpapi: Concurrency %d must be positive", o.Concurrency)
	}
	return nil
}

// Server serves the ingress and admin listeners for one engine. It is safe
// for concurrent use. Make it with New, hand it the engine with SetEngine
// once the engine has opened, serve with ServeIngress and ServeAdmin, stop
// with ShutdownIngress and ShutdownAdmin.
type Server struct {
	opts    Options
	eng     atomic.Pointer[engineBox]
	metrics *metrics
	ingress *fasthttp.Server
	admin   *http.Server

	// baseCtx is the context of engine calls; it is cancelled when a
	// shutdown's drain deadline passes. pollCtx is the context of egress
	// long-polls; it is cancelled as soon as shutdown starts.
	baseCtx, pollCtx       context.Context
	cancelBase, cancelPoll context.CancelFunc

	rates   rates     // /admin/status's per-second figures
	reqPool sync.Pool // *IngressRequest
	names   interner  // namespaces, function types, message types (intern.go)

	body        bodyBudget    // request body bytes held at once
	egressSlots chan struct{} // egress answers being built (MaxEgressReads)
	draining    atomic.Bool   // set when ShutdownIngress starts: /health and /ready answer 503
}

type engineBox struct{ e Engine }

// New makes a Server. It registers its metrics and the Go and process
// collectors in opts.Registry.
func New(opts Options) (*Server, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts}
	s.names.m = make(map[string]string)
	s.reqPool.New = func() any { return new(IngressRequest) }
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.pollCtx, s.cancelPoll = context.WithCancel(s.baseCtx)
	s.body.max = opts.MaxBodyBytesInFlight
	s.egressSlots = make(chan struct{}, opts.MaxEgressReads)
	s.metrics = newMetrics(func() float64 { return float64(s.body.held.Load()) })
	if err := s.metrics.register(opts.Registry); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := opts.Registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("httpapi: registering metrics: %w", err)
			}
		}
	}
	s.ingress = &fasthttp.Server{
		Handler:      s.serveIngress,
		ErrorHandler: s.ingressError,
		Name:         "shardfn",
		ReadTimeout:  opts.ReadTimeout,
		WriteTimeout: opts.WriteTimeout,
		IdleTimeout:  opts.IdleTimeout,
		// With StreamRequestBody, fasthttp reads at most this much of a
		// body before calling the handler, which reads the rest under the
		// body budget (readBody): one byte, so that no body is waited for
		// before the handler has decided to take it.
		MaxRequestBodySize:            1,
		ReadBufferSize:                opts.MaxHeaderBytes,
		Concurrency:                   opts.Concurrency,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{opts.Logger},
		StreamRequestBody:             true,
		ExpectHandler:                 s.expect,
		// fasthttp's errors and logs never quote an unreadable request
		// (a 400 must not echo it).
		SecureErrorLogMessage: true,
	}
	s.admin = &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// SetEngine hands the opened engine to the server: ingress starts accepting
// messages and /metrics gains the engine's collectors (when e has a
// Collectors() []prometheus.Collector method). Call it once.
func (s *Server) SetEngine(e Engine) error {
	if c, ok := e.(interface{ Collectors() []prometheus.Collector }); ok {
		for _, col := range c.Collectors() {
			if err := s.opts.Registry.Register(col); err != nil {
				return fmt.Errorf("httpapi: registering engine metrics: %w", err)
			}
		}
	}
	s.eng.Store(&engineBox{e: e})
	if o, ok := e.(OpsEngine); ok {
		go s.runSampler(o)
	}
	return nil
}

func (s *Server) engine() Engine {
	if b := s.eng.Load(); b != nil {
		return b.e
	}
	return nil
}

// Options returns the effective options.
func (s *Server) Options() Options { return s.opts }

// Registry returns the metrics registry that /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.opts.Registry }

// IngressHandler returns the ingress request handler (for tests and for
// serving on a listener of the caller's choice).
func (s *Server) IngressHandler() fasthttp.RequestHandler { return s.serveIngress }

// AdminHandler returns the admin handler.
func (s *Server) AdminHandler() http.Handler { return s.admin.Handler }

// ServeIngress serves the ingress on ln until ShutdownIngress; it returns nil
// after a shutdown. Connections are limited (MaxConns, MaxConnsPerClient)
// and failed accepts, such as running out of file descriptors, are retried
// after a back-off: clients cannot make it return.
func (s *Server) ServeIngress(ln net.Listener) error { return s.ingress.Serve(newConnLimiter(ln, s)) }

// ServeAdmin serves the admin routes on ln until ShutdownAdmin; it returns
// nil after a shutdown.
func (s *Server) ServeAdmin(ln net.Listener) error {
	err := s.admin.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ShutdownIngress stops accepting connections, ends egress long-polls,
// closes idle connections and waits for requests in flight to be answered.
// If ctx ends first, engine calls still in flight are cancelled (their
// requests are answered 503) and ctx's error is returned.
func (s *Server) ShutdownIngress(ctx context.Context) error {
	s.draining.Store(true)
	s.cancelPoll()
	err := s.ingress.ShutdownWithContext(ctx)
	if err != nil {
		s.cancelBase()
		// Give cancelled handlers a moment to answer.
		c2, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.ingress.ShutdownWithContext(c2)
	}
	return err
}

// ShutdownAdmin stops the admin listener, waiting for its requests until
// ctx ends.
func (s *Server) ShutdownAdmin(ctx context.Context) error {
	err := s.admin.Shutdown(ctx)
	s.cancelBase()
	return err
}

// fasthttpLogger adapts slog to fasthttp's Logger. fasthttp reports
// connection-level errors through it (garbage, resets, timeouts): they are
// the clients' problem, so they go to Debug, clipped.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	if !f.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	f.l.Debug("ingress connection error", "detail", msg)
}
