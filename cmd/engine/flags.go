package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/httpapi"
	"github.com/shardfn/shardfn/tracing"
)

// config is the parsed command line.
type config struct {
	dataDir            string
	ingressAddr        string
	adminAddr          string
	shards             int
	memoryBudget       byteSize
	maxBatchDelay      time.Duration
	checkpointInterval time.Duration
	maxBody            byteSize
	module             string
	stateAPI           bool
	logLevel           string
	logFormat          string
	noRides            bool
	noExamples         bool
	shutdownTimeout    time.Duration
	maxWait            time.Duration
	acceptLogLoss      bool
	maxConns           int
	maxConnsPerClient  int
	maxBodyInFlight    byteSize
	maxEgressBytes     byteSize
	maxEgressReads     int
	maxQueuedBytes     byteSize
	mailboxCapacity    int
	memoryLimit        string
	cluster            clusterFlags // --cluster and the flags of cluster mode (cluster_flags.go)
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{memoryBudget: 256 << 20, maxBody: 4 << 20, maxEgressBytes: 4 << 20, maxQueuedBytes: 64 << 20}
	fs := flag.NewFlagSet("engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: engine [flags]\n\nRuns the shardfn server with the RS-1 ride-sharing functions built in.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nTracing (OpenTelemetry) is off unless the environment switches it on:\n"+
			"  OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318   OTLP over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=grpc for :4317)\n"+
			"  OTEL_TRACES_EXPORTER=otlp|console|none               console prints spans on stdout\n"+
			"  OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG          default parentbased_traceidratio %g\n"+
			"  OTEL_SERVICE_NAME                                    default shardfn\n"+
			"See cmd/engine/README.md.\n", tracing.DefaultRatio)
	}
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory of the write-ahead log and the state store (created if missing)")
	fs.StringVar(&c.ingressAddr, "ingress-addr", "127.0.0.1:8080", "listen address of the HTTP ingress (messages, batches, egress reads); port 0 picks a free port")
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:9090", "listen address of the admin endpoints (/health, /ready, /metrics, /debug/pprof/, /state/, /admin/) and the web console (/ui/); keep it on loopback")
	fs.IntVar(&c.shards, "shards", 0, "number of shards; 0 means one per available core")
	fs.Var(&c.memoryBudget, "memory-budget", "state cache size in bytes; suffixes KB, MB, GB (powers of 1000) and KiB, MiB, GiB (powers of 1024) are accepted")
	fs.DurationVar(&c.maxBatchDelay, "max-batch-delay", 0, "longest the group commit waits to batch more records before syncing; 0 syncs as soon as the previous sync returns")
	fs.DurationVar(&c.checkpointInterval, "checkpoint-interval", 10*time.Second, "period of checkpoints (shorter: faster recovery, more writes)")
	fs.Var(&c.maxBody, "max-body", "largest request body (one message or one batch), in bytes with optional suffix; larger ones get 413")
	fs.StringVar(&c.module, "module", "", "StateFun module.yaml naming remote function endpoints to serve beside the built-in functions")
	fs.BoolVar(&c.stateAPI, "state-api", true, "serve GET /state/{namespace}/{type}/{id} on the admin listener")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.BoolVar(&c.noRides, "no-rides", false, "do not register the built-in RS-1 ride-sharing functions")
	fs.BoolVar(&c.noExamples, "no-examples", false, "do not register the built-in example function example/counter (examples/kafka)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, longest wait for requests in flight before they are cut off, and then again for the engine's final checkpoint and close")
	fs.DurationVar(&c.maxWait, "max-wait", 60*time.Second, "longest ?wait= accepted for request-reply and egress long-polls")
	fs.BoolVar(&c.acceptLogLoss, "accept-log-loss", false, "start even when the write-ahead log is shorter than it was (a segment cut or lost by hand, not by a crash), dropping the acknowledged work in the missing range; without it such a log refuses to start and names the range")
	total, per := httpapi.DefaultConnLimits(httpapi.FileLimit())
	fs.IntVar(&c.maxConns, "max-conns", 0, fmt.Sprintf("most ingress connections open at once (more get 503 and are closed); 0 derives it from the file limit, leaving room for the store: %d here", total))
	fs.IntVar(&c.maxConnsPerClient, "max-conns-per-client", 0, fmt.Sprintf("most ingress connections from one client IP address; 0 means a quarter of --max-conns: %d here", per))
	fs.Var(&c.maxBodyInFlight, "max-body-in-flight", "most bytes of request bodies held at once across all connections (a body that does not fit gets 503 with Retry-After before it is read); 0 means 16 x --max-body")
	fs.Var(&c.maxEgressBytes, "max-egress-bytes", "most bytes of records in one egress answer (a larger single record still comes alone; next says where to continue)")
	fs.IntVar(&c.maxEgressReads, "max-egress-reads", runtime.GOMAXPROCS(0), "most egress answers read and built at once (more get 503 with Retry-After); a long-poll waits without holding one; default one per core")
	fs.Var(&c.maxQueuedBytes, "max-queued-bytes", "most bytes of messages the shards hold (queued, in remote calls, delayed), split evenly between them; past a shard's share its ingress gets 503 with Retry-After. Under overload a message waits up to about this much work before it runs")
	fs.IntVar(&c.mailboxCapacity, "mailbox-capacity", 16384, "most ingress messages waiting in one shard's lane (more get 503 with Retry-After); with --max-queued-bytes it bounds how long an accepted message waits under overload (about this many messages' work)")
	fs.StringVar(&c.memoryLimit, "memory-limit", "auto", "soft limit of the Go runtime's memory (debug.SetMemoryLimit): auto derives it from the other limits (see \"Memory\" in cmd/engine/README.md), off (or 0) sets none, or a byte size; GOMEMLIMIT in the environment wins over auto")
	c.cluster.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (flags only; see -h)", fs.Args())
	}
	if c.shards < 0 {
		return nil, fmt.Errorf("--shards %d: must be 0 (one per core) or positive", c.shards)
	}
	if c.maxBody <= 0 || c.maxBody > 1<<30 {
		return nil, fmt.Errorf("--max-body %d: must be between 1 byte and 1GiB", c.maxBody)
	}
	if c.maxConns < 0 || c.maxConnsPerClient < 0 {
		return nil, fmt.Errorf("--max-conns and --max-conns-per-client must not be negative (0 derives them from the file limit)")
	}
	if c.maxBodyInFlight != 0 && c.maxBodyInFlight < c.maxBody {
		return nil, fmt.Errorf("--max-body-in-flight %d is below --max-body %d: a body of the largest size could never be read", c.maxBodyInFlight, c.maxBody)
	}
	if c.maxEgressBytes <= 0 || c.maxEgressBytes > 1<<30 {
		return nil, fmt.Errorf("--max-egress-bytes %d: must be between 1 byte and 1GiB", c.maxEgressBytes)
	}
	if c.maxQueuedBytes < 64<<10 {
		return nil, fmt.Errorf("--max-queued-bytes %d: must be at least 64KiB", c.maxQueuedBytes)
	}
	if c.mailboxCapacity < 1 {
		return nil, fmt.Errorf("--mailbox-capacity %d: must be at least 1", c.mailboxCapacity)
	}
	if c.maxEgressReads < 1 {
		return nil, fmt.Errorf("--max-egress-reads %d: must be at least 1", c.maxEgressReads)
	}
	if _, err := c.goMemoryLimit(); err != nil {
		return nil, err
	}
	if c.checkpointInterval <= 0 {
		return nil, fmt.Errorf("--checkpoint-interval must be positive")
	}
	if c.maxBatchDelay < 0 {
		return nil, fmt.Errorf("--max-batch-delay must not be negative")
	}
	if c.dataDir == "" {
		return nil, fmt.Errorf("--data-dir must not be empty")
	}
	if err := c.cluster.validate(fs); err != nil {
		return nil, err
	}
	return c, nil
}

// byteSize is a flag.Value for byte counts with an optional unit suffix.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

// parseByteSize parses "4194304", "4MiB", "256MB", "1.5GiB", "512k".
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a byte size; use e.g. 4194304, 4MiB or 256MB", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q has an unknown unit %q; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB", s, unit)
	}
	v := f * mult
	if v >= 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(v), nil
}

func newLogger(c *config, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", c.logFormat)
}
