// Command engine is the standalone shardfn server: the engine with the RS-1
// ride-sharing functions built in (and optionally remote functions named by
// a StateFun module.yaml), an HTTP ingress and an admin listener. See
// README.md in this directory for curl examples and `engine -h` for flags.
//
// Lifecycle: it listens on both addresses at once (so /health answers while
// the engine recovers), opens and recovers the engine, then serves. On
// SIGTERM or SIGINT it stops accepting, drains requests in flight, closes
// the engine (which checkpoints) and exits 0; a second signal exits at once
// with status 130. Startup failures exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
	kafkaexample "github.com/shardfn/shardfn/examples/kafka"
	"github.com/shardfn/shardfn/httpapi"
	"github.com/shardfn/shardfn/internal/memmodel"
	"github.com/shardfn/shardfn/kafka"
	"github.com/shardfn/shardfn/remote"
	"github.com/shardfn/shardfn/rides"
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
	memoryLimit        string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{memoryBudget: 256 << 20, maxBody: 4 << 20, maxEgressBytes: 4 << 20, maxQueuedBytes: 64 << 20}
	fs := flag.NewFlagSet("engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: engine [flags]\n\nRuns the shardfn server with the RS-1 ride-sharing functions built in.\n\nFlags:\n")
		fs.PrintDefaults()
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
	fs.StringVar(&c.memoryLimit, "memory-limit", "auto", "soft limit of the Go runtime's memory (debug.SetMemoryLimit): auto derives it from the other limits (see \"Memory\" in cmd/engine/README.md), off (or 0) sets none, or a byte size; GOMEMLIMIT in the environment wins over auto")
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
	if c.maxQueuedBytes < 1<<20 {
		return nil, fmt.Errorf("--max-queued-bytes %d: must be at least 1MiB", c.maxQueuedBytes)
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
	return c, nil
}

// memParams are the memory model's parameters for these flags (maxConns
// and bodyInFlight as the server derived them).
func (c *config) memParams(maxConns int, bodyInFlight int64) memmodel.Params {
	p := memmodel.Params{
		MemoryBudget:    int64(c.memoryBudget),
		MaxQueuedBytes:  int64(c.maxQueuedBytes),
		MaxBodyInFlight: bodyInFlight,
		MaxEgressBytes:  int64(c.maxEgressBytes),
		MaxEgressReads:  c.maxEgressReads,
		MaxConns:        maxConns,
		MaxRecordBytes:  max(32<<20, 2*int64(c.maxBody)),
	}
	p.Defaults()
	return p
}

// goMemoryLimit is the soft memory limit --memory-limit asks for: 0 for
// none (off, or auto while GOMEMLIMIT is set: the runtime has applied it).
func (c *config) goMemoryLimit() (int64, error) {
	switch strings.ToLower(strings.TrimSpace(c.memoryLimit)) {
	case "off", "0":
		return 0, nil
	case "auto", "":
		if os.Getenv("GOMEMLIMIT") != "" {
			return 0, nil
		}
		total, _ := httpapi.DefaultConnLimits(httpapi.FileLimit())
		conns := c.maxConns
		if conns == 0 {
			conns = total
		}
		inFlight := int64(c.maxBodyInFlight)
		if inFlight == 0 {
			inFlight = 16 * int64(c.maxBody)
		}
		return memmodel.GoLimit(c.memParams(conns, inFlight)), nil
	}
	v, err := parseByteSize(c.memoryLimit)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit: %w (or auto, or off)", err)
	}
	if v > 0 && v < 64<<20 {
		return 0, fmt.Errorf("--memory-limit %d is below 64MiB: the runtime would collect without end", v)
	}
	return v, nil
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

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main without os.Exit; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "engine:", err)
		return 2
	}
	log, err := newLogger(c, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "engine:", err)
		return 2
	}
	slog.SetDefault(log)

	// Signals are caught from the start: the first asks for a graceful
	// stop, a second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stop := make(chan os.Signal, 1)
	go func() {
		s := <-sigs
		log.Info("shutdown requested", "signal", s.String())
		stop <- s
		s = <-sigs
		log.Warn("second signal: exiting at once", "signal", s.String())
		os.Exit(130)
	}()

	// Function specs: RS-1 built in, plus remote functions.
	reg := prometheus.NewRegistry()
	var specs []engine.FunctionSpec
	if !c.noRides {
		specs = append(specs, rides.Specs()...)
	}
	if !c.noExamples {
		specs = append(specs, kafkaexample.Specs()...)
	}
	var rc *remote.Client
	kcfg := &kafka.Config{}
	defer func() { closeRemote(rc, log) }() // idempotent; early returns included
	if c.module != "" {
		mod, err := remote.LoadModule(c.module)
		if err != nil {
			log.Error("cannot load the module", "module", c.module, "err", err)
			return 1
		}
		for _, w := range mod.Warnings {
			log.Warn("module", "detail", w)
		}
		rc, err = remote.NewClient(remote.Options{Logger: log})
		if err != nil {
			log.Error("cannot start the remote function client", "err", err)
			return 1
		}
		rs, err := mod.Specs(rc)
		if err != nil {
			log.Error("bad remote function", "module", c.module, "err", err)
			return 1
		}
		for _, col := range rc.Collectors() {
			if err := reg.Register(col); err != nil {
				log.Error("registering remote metrics", "err", err)
				return 1
			}
		}
		for _, s := range rs {
			log.Info("remote function", "type", s.Namespace+"/"+s.Type)
		}
		specs = append(specs, rs...)
		if kcfg, err = kafka.Parse(mod.Components); err != nil {
			log.Error("bad Kafka ingress or egress", "module", c.module, "err", err)
			return 1
		}
		for _, in := range kcfg.Ingresses {
			log.Info("kafka ingress", "id", in.ID, "brokers", strings.Join(in.Brokers, ","), "group", in.Group, "topics", len(in.Topics))
		}
		for _, eg := range kcfg.Egresses {
			log.Info("kafka egress", "id", eg.ID, "log", eg.Log(), "brokers", strings.Join(eg.Brokers, ","), "semantic", string(eg.Semantic))
		}
	}
	kmetrics := kafka.NewMetrics()
	if len(kcfg.Ingresses)+len(kcfg.Egresses) > 0 {
		specs = append(specs, kafka.Specs()...)
		for _, col := range kmetrics.Collectors() {
			if err := reg.Register(col); err != nil {
				log.Error("registering Kafka metrics", "err", err)
				return 1
			}
		}
	}
	if len(specs) == 0 {
		log.Error("no function types: --no-rides and --no-examples without --module leave nothing to serve")
		return 1
	}

	memLimit, _ := c.goMemoryLimit() // validated by parseFlags
	if memLimit > 0 {
		debug.SetMemoryLimit(memLimit)
	}

	srv, err := httpapi.New(httpapi.Options{
		MaxBodyBytes:         int(c.maxBody),
		MaxBodyBytesInFlight: int64(c.maxBodyInFlight),
		MaxConns:             c.maxConns,
		MaxConnsPerClient:    c.maxConnsPerClient,
		MaxEgressBytes:       int(c.maxEgressBytes),
		MaxEgressReads:       c.maxEgressReads,
		MaxWait:              c.maxWait,
		DisableStateAPI:      !c.stateAPI,
		Logger:               log,
		Registry:             reg,
		StuckEndpoints:       stuckEndpoints(rc),
	})
	if err != nil {
		log.Error("bad server options", "err", err)
		return 1
	}
	ingLn, err := net.Listen("tcp", c.ingressAddr)
	if err != nil {
		log.Error("cannot listen on the ingress address", "addr", c.ingressAddr, "err", err)
		return 1
	}
	admLn, err := net.Listen("tcp", c.adminAddr)
	if err != nil {
		ingLn.Close()
		log.Error("cannot listen on the admin address", "addr", c.adminAddr, "err", err)
		return 1
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.ServeIngress(ingLn) }()
	go func() { serveErr <- srv.ServeAdmin(admLn) }()
	log.Info("listening", "ingress", ingLn.Addr().String(), "admin", admLn.Addr().String())

	opts := engine.Options{
		DataDir:            c.dataDir,
		Shards:             c.shards,
		MemoryBudget:       int64(c.memoryBudget),
		MaxMessageBytes:    int(c.maxBody),
		MaxQueuedBytes:     int64(c.maxQueuedBytes),
		MaxBatchDelay:      c.maxBatchDelay,
		CheckpointInterval: c.checkpointInterval,
		AcceptLogLoss:      c.acceptLogLoss,
		Logger:             log,
	}
	if opts.Shards == 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	log.Info("starting", "data_dir", opts.DataDir, "shards", opts.Shards, "memory_budget", opts.MemoryBudget,
		"max_batch_delay", opts.MaxBatchDelay, "checkpoint_interval", opts.CheckpointInterval,
		"max_body", int64(c.maxBody), "module", c.module, "state_api", c.stateAPI, "rides", !c.noRides,
		"max_conns", srv.Options().MaxConns, "max_conns_per_client", srv.Options().MaxConnsPerClient,
		"max_body_in_flight", srv.Options().MaxBodyBytesInFlight, "max_egress_bytes", srv.Options().MaxEgressBytes,
		"max_egress_reads", srv.Options().MaxEgressReads, "go_memory_limit", debug.SetMemoryLimit(-1),
		"rss_bound", memmodel.Bound(c.memParams(srv.Options().MaxConns, srv.Options().MaxBodyBytesInFlight)),
		"file_limit", httpapi.FileLimit(),
		"function_types", len(specs), "go", runtime.Version(), "pid", os.Getpid())

	type opened struct {
		e   *engine.Engine
		err error
	}
	openStart := time.Now()
	openc := make(chan opened, 1)
	go func() {
		e, err := engine.Open(opts, specs...)
		openc <- opened{e, err}
	}()
	var eng *engine.Engine
	select {
	case o := <-openc:
		if o.err != nil {
			log.Error("engine failed to open", "data_dir", opts.DataDir, "err", o.err)
			shutdownServer(srv, log, time.Second)
			closeRemote(rc, log)
			return 1
		}
		eng = o.e
	case s := <-stop:
		log.Info("stopping during recovery", "signal", s.String())
		shutdownServer(srv, log, time.Second)
		o := <-openc // a second signal exits at once
		if o.err == nil {
			_ = o.e.Close()
		}
		closeRemote(rc, log)
		return 0
	}
	if err := srv.SetEngine(eng); err != nil {
		log.Error("cannot serve the engine", "err", err)
		_ = eng.Close()
		closeRemote(rc, log)
		return 1
	}
	eff := eng.Options()
	rec := eng.Recovery()
	log.Info("ready", "open_seconds", time.Since(openStart).Seconds(), "replayed_records", rec.Records,
		"replayed_bytes", rec.Bytes, "pending_restored", rec.Pending, "timers_restored", rec.Timers, "shards", eff.Shards,
		"memory_budget", eff.MemoryBudget, "checkpoint_interval", eff.CheckpointInterval,
		"ingress", ingLn.Addr().String(), "admin", admLn.Addr().String())

	// Kafka ingresses and egresses run against the open engine.
	kr, err := kafka.Start(eng, kcfg, kafka.Options{Logger: log, Metrics: kmetrics})
	if err != nil {
		log.Error("cannot start the Kafka ingresses and egresses", "err", err)
		_ = eng.Close()
		closeRemote(rc, log)
		return 1
	}

	// Watch for a failed stop: log it once; /health then answers 503.
	watchDone := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-watchDone:
				return
			case <-t.C:
				if err := eng.Err(); err != nil {
					log.Error("failed stop", "err", err, "action", "the engine stopped after a storage error; /health answers 503; restart the server")
					return
				}
			}
		}
	}()

	status := 0
	select {
	case <-stop:
	case err := <-serveErr:
		log.Error("listener failed", "err", err)
		status = 1
	}
	close(watchDone)
	log.Info("shutting down", "draining_for_at_most", c.shutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	if err := srv.ShutdownIngress(ctx); err != nil {
		log.Warn("ingress did not drain in time; requests in flight were cut off", "err", err)
	}
	// Kafka: stop fetching, wait for the batches the engine took, record
	// and commit the positions; stop shipping egress.
	kr.Close(ctx)
	cancel()
	closeStart := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- eng.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			log.Error("engine close failed", "err", err)
			status = 1
		}
	case <-time.After(c.shutdownTimeout):
		// A storage that hangs (a flush that never returns) must not hang
		// the shutdown: what was acknowledged is in the log already.
		log.Error("engine close did not finish within --shutdown-timeout; exiting without its final checkpoint (recovery replays the log)", "timeout", c.shutdownTimeout)
		status = 1
	}
	closeSeconds := time.Since(closeStart).Seconds()
	closeRemote(rc, log)
	shutdownServer(srv, log, 2*time.Second)
	log.Info("shutdown complete", "exit_status", status, "engine_close_seconds", closeSeconds)
	return status
}

// shutdownServer stops both listeners.
func shutdownServer(srv *httpapi.Server, log *slog.Logger, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := srv.ShutdownIngress(ctx); err != nil {
		log.Warn("ingress shutdown", "err", err)
	}
	if err := srv.ShutdownAdmin(ctx); err != nil {
		log.Warn("admin shutdown", "err", err)
	}
}

// stuckEndpoints reports the remote client's stuck endpoints to /health
// (nil without a module).
func stuckEndpoints(rc *remote.Client) func() []httpapi.StuckEndpoint {
	if rc == nil {
		return nil
	}
	return func() []httpapi.StuckEndpoint {
		var out []httpapi.StuckEndpoint
		for _, h := range rc.Stuck() {
			out = append(out, httpapi.StuckEndpoint{
				Endpoint: h.Endpoint, URL: h.URL, Since: h.StuckSince,
				ConsecutiveFailures: h.ConsecutiveFailures, RetryingBatches: h.RetryingBatches, LastError: h.LastError,
			})
		}
		return out
	}
}

// closeRemote closes the remote client, if any; it may be called again.
func closeRemote(rc *remote.Client, log *slog.Logger) {
	if rc == nil {
		return
	}
	if err := rc.Close(); err != nil {
		log.Warn("remote client close", "err", err)
	}
}
