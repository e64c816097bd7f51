// Package tracing sets OpenTelemetry tracing up for shardfn from the
// standard OTEL_* environment variables: an SDK tracer provider with a
// batching OTLP (or console) exporter and a sampler, handed to
// engine.Options.TracerProvider and remote.Options.TracerProvider.
//
// Tracing is off unless the environment asks for it: OTEL_TRACES_EXPORTER
// set to otlp or console, or, with OTEL_TRACES_EXPORTER unset, an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none keep it off.
//
// The sampler is OTEL_TRACES_SAMPLER (always_on, always_off, traceidratio,
// parentbased_always_on, parentbased_always_off, parentbased_traceidratio)
// with OTEL_TRACES_SAMPLER_ARG; left unset, it is
// parentbased_traceidratio at DefaultRatio (or at OTEL_TRACES_SAMPLER_ARG
// when that alone is set): one ingress call in a hundred starts a trace,
// and a request that arrives with a sampled traceparent is always traced.
// Everything else (endpoint, headers, timeout, compression, certificates,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*) is read by the
// OpenTelemetry SDK and exporters as the specification says.
package tracing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// DefaultRatio is the share of new traces sampled when OTEL_TRACES_SAMPLER
// is not set (results/tracing-overhead.md measures its cost).
const DefaultRatio = 0.01

// DefaultServiceName is service.name unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
const DefaultServiceName = "shardfn"

// Options configure FromEnv.
type Options struct {
	// Getenv reads the environment. Default os.Getenv. (The OTLP exporters
	// and the SDK read the variables they own from the process environment
	// whatever this says.)
	Getenv func(string) string
	// Console receives the spans of the console exporter. Default
	// os.Stdout.
	Console io.Writer
	// Logger receives export errors. Default slog.Default().
	Logger *slog.Logger
}

// Tracing is the result of FromEnv: a tracer provider, or nothing when
// tracing is off.
type Tracing struct {
	provider *sdktrace.TracerProvider
	api      trace.TracerProvider // provider, or roots.go's wrapper of it
	desc     string
}

// Provider returns the tracer provider, or nil when tracing is off (a nil
// interface, as engine.Options and remote.Options want it).
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.api
}

// Enabled reports whether tracing is on.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// String says what was set up, for the log ("off" when off).
func (t *Tracing) String() string {
	if !t.Enabled() {
		return "off"
	}
	return t.desc
}

// Shutdown exports what is buffered and stops the exporters. Call it after
// the engine is closed.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Environment variables read here.
const (
	envDisabled        = "OTEL_SDK_DISABLED"
	envExporter        = "OTEL_TRACES_EXPORTER"
	envEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envSampler         = "OTEL_TRACES_SAMPLER"
	envSamplerArg      = "OTEL_TRACES_SAMPLER_ARG"
	protoHTTP          = "http/protobuf"
	protoGRPC          = "grpc"
	exporterOTLP       = "otlp"
	exporterConsole    = "console"
	exporterNone       = "none"
	samplerDefaultName = "parentbased_traceidratio"
)

// FromEnv sets tracing up as the environment says (see the package
// comment). Off is not an error: the result's Provider is then nil. A
// variable with a value shardfn cannot use is an error that names it.
func FromEnv(ctx context.Context, o Options) (*Tracing, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Console == nil {
		o.Console = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	get := func(k string) string { return strings.TrimSpace(o.Getenv(k)) }
	switch strings.ToLower(get(envDisabled)) {
	case "", "false":
	case "true":
		return &Tracing{}, nil
	default:
		return nil, fmt.Errorf("tracing: %s=%q: want true or false", envDisabled, o.Getenv(envDisabled))
	}
	exporters, err := exporterNames(get)
	if err != nil || len(exporters) == 0 {
		return &Tracing{}, err
	}
	sampler, sdesc, draw, err := samplerFromEnv(get)
	if err != nil {
		return nil, err
	}
	var opts []sdktrace.TracerProviderOption
	var descs []string
	for _, name := range exporters {
		exp, desc, err := newExporter(ctx, name, get, o.Console)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		descs = append(descs, desc)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: win over the default
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource attributes (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	opts = append(opts, sdktrace.WithSampler(sampler), sdktrace.WithResource(res))
	otel.SetErrorHandler(&errorLog{logger: o.Logger})
	tp := sdktrace.NewTracerProvider(opts...)
	t := &Tracing{provider: tp, api: tp, desc: strings.Join(descs, " + ") + ", sampler " + sdesc}
	if draw > 0 {
		t.api = drawRoots(tp, draw) // roots.go
	}
	return t, nil
}

// exporterNames returns the exporters to run (none: tracing off).
func exporterNames(get func(string) string) ([]string, error) {
	v := strings.ToLower(get(envExporter))
	if v == "" {
		if get(envEndpoint) == "" && get(envTracesEndpoint) == "" {
			return nil, nil // off by default
		}
		return []string{exporterOTLP}, nil
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		switch f = strings.TrimSpace(f); f {
		case exporterNone:
			return nil, nil
		case exporterOTLP, exporterConsole:
			if !contains(out, f) {
				out = append(out, f)
			}
		default:
			return nil, fmt.Errorf("tracing: %s=%q: exporter %q is not supported; use otlp, console or none", envExporter, get(envExporter), f)
		}
	}
	return out, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// newExporter makes one exporter; the OTLP exporters read their
// OTEL_EXPORTER_OTLP_* settings themselves.
func newExporter(ctx context.Context, name string, get func(string) string, console io.Writer) (sdktrace.SpanExporter, string, error) {
	if name == exporterConsole {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(console))
		return exp, "console", err
	}
	endpoint, endpointVar := get(envTracesEndpoint), envTracesEndpoint
	if endpoint == "" {
		endpoint, endpointVar = get(envEndpoint), envEndpoint
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, "", fmt.Errorf("tracing: %s=%q: want a URL such as http://collector:4318 (http/protobuf) or http://collector:4317 (grpc)", endpointVar, endpoint)
		}
	}
	proto, protoVar := get(envTracesProtocol), envTracesProtocol
	if proto == "" {
		proto, protoVar = get(envProtocol), envProtocol
	}
	var exp sdktrace.SpanExporter
	var err error
	switch proto {
	case "", protoHTTP:
		proto = protoHTTP
		exp, err = otlptracehttp.New(ctx)
	case protoGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, "", fmt.Errorf("tracing: %s=%q: want %s or %s (http/json is not supported)", protoVar, proto, protoHTTP, protoGRPC)
	}
	if err != nil {
		return nil, "", fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	if endpoint == "" {
		endpoint = "the default endpoint"
	}
	return exp, "otlp " + proto + " to " + endpoint, nil
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
// draw, when not 0, is the ratio at which roots are drawn before the SDK
// (roots.go); the sampler then samples every root it is given.
func samplerFromEnv(get func(string) string) (s sdktrace.Sampler, desc string, draw float64, err error) {
	name := strings.ToLower(get(envSampler))
	arg := get(envSamplerArg)
	ratio := func(def float64) (float64, error) {
		if arg == "" {
			return def, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("tracing: %s=%q: want a ratio from 0 to 1, such as 0.01", envSamplerArg, arg)
		}
		return r, nil
	}
	fmtRatio := func(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }
	// parentBasedRatio is parentbased_traceidratio at r, with roots drawn
	// in roots.go when 0 < r < 1.
	parentBasedRatio := func(r float64) (sdktrace.Sampler, float64) {
		if r > 0 && r < 1 {
			return sdktrace.ParentBased(sdktrace.AlwaysSample()), r
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), 0
	}
	switch name {
	case "":
		r, err := ratio(DefaultRatio)
		if err != nil {
			return nil, "", 0, err
		}
		s, draw := parentBasedRatio(r)
		return s, samplerDefaultName + " " + fmtRatio(r) + " (default)", draw, nil
	case "always_on":
		return sdktrace.AlwaysSample(), name, 0, nil
	case "always_off":
		return sdktrace.NeverSample(), name, 0, nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), name, 0, nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), name, 0, nil
	case "traceidratio":
		r, err := ratio(1) // the specification's default argument
		if err != nil {
			return nil, "", 0, err
		}
		return sdktrace.TraceIDRatioBased(r), name + " " + fmtRatio(r), 0, nil
	case "parentbased_traceidratio":
		r, err := ratio(1)
		if err != nil {
			return nil, "", 0, err
		}
		s, draw := parentBasedRatio(r)
		return s, name + " " + fmtRatio(r), draw, nil
	}
	return nil, "", 0, fmt.Errorf("tracing: %s=%q is not supported; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", envSampler, get(envSampler))
}

// errorLog logs the SDK's errors (a collector that cannot be reached: the
// spans of that batch are dropped, the engine goes on) at most once per
// errorLogEvery, with the count of those not logged.
type errorLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	last   time.Time
	missed int
}

const errorLogEvery = 30 * time.Second

func (l *errorLog) Handle(err error) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < errorLogEvery {
		l.missed++
		l.mu.Unlock()
		return
	}
	missed := l.missed
	l.last, l.missed = now, 0
	l.mu.Unlock()
	l.logger.Warn("tracing: exporting spans failed; they are dropped and the engine goes on", "err", err, "errors_not_logged", missed)
}
