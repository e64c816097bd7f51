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
	"github.com/shardfn/shardfn/tracing"
)

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

	// Tracing: off unless the OTEL_* environment variables ask for it.
	tr, err := tracing.FromEnv(context.Background(), tracing.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "engine:", err)
		return 2
	}
	defer shutdownTracing(tr, log) // after the engine and the remote client closed
	if tr.Enabled() {
		log.Info("tracing on", "setup", tr.String())
	}
	stop := notifyStop(log)

	d := &daemon{c: c, log: log, tr: tr, reg: prometheus.NewRegistry(), kcfg: &kafka.Config{}, kmetrics: kafka.NewMetrics()}
	defer d.closeRemote() // idempotent; early returns included
	if !d.loadFunctions() || !d.listen() {
		return 1
	}
	if c.cluster.enabled {
		return d.runCluster(stop) // cluster.go
	}
	if status, ok := d.openEngine(stop); !ok {
		return status
	}
	if !d.startKafka() {
		return 1
	}
	return d.serve(stop)
}

// notifyStop catches signals from the start: the first asks for a graceful
// stop (it is sent on the channel returned), a second one exits at once.
func notifyStop(log *slog.Logger) <-chan os.Signal {
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
	return stop
}

// daemon is one life of the standalone server: what run's steps share.
// Each step logs its own failure and reports it by returning false.
type daemon struct {
	c   *config
	log *slog.Logger
	tr  *tracing.Tracing // off unless OTEL_* asks for it
	reg *prometheus.Registry

	specs    []engine.FunctionSpec
	rc       *remote.Client // nil without a module
	kcfg     *kafka.Config
	kmetrics *kafka.Metrics

	srv          *httpapi.Server
	ingLn, admLn net.Listener
	serveErr     chan error // a listener's end

	eng *engine.Engine
	kr  *kafka.Runner
}

// loadFunctions gathers the function specs: RS-1 and the examples built
// in, plus the remote functions and Kafka ingresses and egresses of the
// module.
func (d *daemon) loadFunctions() bool {
	if !d.c.noRides {
		d.specs = append(d.specs, rides.Specs()...)
	}
	if !d.c.noExamples {
		d.specs = append(d.specs, kafkaexample.Specs()...)
	}
	if d.c.module != "" && !d.loadModule() {
		return false
	}
	if len(d.kcfg.Ingresses)+len(d.kcfg.Egresses) > 0 {
		d.specs = append(d.specs, kafka.Specs()...)
		for _, col := range d.kmetrics.Collectors() {
			if err := d.reg.Register(col); err != nil {
				d.log.Error("registering Kafka metrics", "err", err)
				return false
			}
		}
	}
	if len(d.specs) == 0 {
		d.log.Error("no function types: --no-rides and --no-examples without --module leave nothing to serve")
		return false
	}
	return true
}

// loadModule reads --module: its remote functions, served by a remote
// client, and its Kafka ingresses and egresses.
func (d *daemon) loadModule() bool {
	log, module := d.log, d.c.module
	mod, err := remote.LoadModule(module)
	if err != nil {
		log.Error("cannot load the module", "module", module, "err", err)
		return false
	}
	for _, w := range mod.Warnings {
		log.Warn("module", "detail", w)
	}
	d.rc, err = remote.NewClient(remote.Options{Logger: log, TracerProvider: d.tr.Provider()})
	if err != nil {
		log.Error("cannot start the remote function client", "err", err)
		return false
	}
	rs, err := mod.Specs(d.rc)
	if err != nil {
		log.Error("bad remote function", "module", module, "err", err)
		return false
	}
	for _, col := range d.rc.Collectors() {
		if err := d.reg.Register(col); err != nil {
			log.Error("registering remote metrics", "err", err)
			return false
		}
	}
	for _, sp := range rs {
		log.Info("remote function", "type", sp.Namespace+"/"+sp.Type)
	}
	d.specs = append(d.specs, rs...)
	if d.kcfg, err = kafka.Parse(mod.Components); err != nil {
		log.Error("bad Kafka ingress or egress", "module", module, "err", err)
		return false
	}
	for _, in := range d.kcfg.Ingresses {
		log.Info("kafka ingress", "id", in.ID, "brokers", strings.Join(in.Brokers, ","), "group", in.Group, "topics", len(in.Topics))
	}
	for _, eg := range d.kcfg.Egresses {
		log.Info("kafka egress", "id", eg.ID, "log", eg.Log(), "brokers", strings.Join(eg.Brokers, ","), "semantic", string(eg.Semantic))
	}
	return true
}

// listen makes the HTTP server and serves both listeners at once, so that
// /health answers while the engine recovers.
func (d *daemon) listen() bool {
	c, log := d.c, d.log
	if memLimit, _ := c.goMemoryLimit(); memLimit > 0 { // validated by parseFlags
		debug.SetMemoryLimit(memLimit)
	}
	var err error
	d.srv, err = httpapi.New(httpapi.Options{
		MaxBodyBytes:         int(c.maxBody),
		MaxBodyBytesInFlight: int64(c.maxBodyInFlight),
		MaxConns:             c.maxConns,
		MaxConnsPerClient:    c.maxConnsPerClient,
		MaxEgressBytes:       int(c.maxEgressBytes),
		MaxEgressReads:       c.maxEgressReads,
		MaxWait:              c.maxWait,
		DisableStateAPI:      !c.stateAPI,
		Logger:               log,
		Registry:             d.reg,
		StuckEndpoints:       stuckEndpoints(d.rc),
	})
	if err != nil {
		log.Error("bad server options", "err", err)
		return false
	}
	d.ingLn, err = net.Listen("tcp", c.ingressAddr)
	if err != nil {
		log.Error("cannot listen on the ingress address", "addr", c.ingressAddr, "err", err)
		return false
	}
	d.admLn, err = net.Listen("tcp", c.adminAddr)
	if err != nil {
		d.ingLn.Close()
		log.Error("cannot listen on the admin address", "addr", c.adminAddr, "err", err)
		return false
	}
	d.serveErr = make(chan error, 2)
	go func() { d.serveErr <- d.srv.ServeIngress(d.ingLn) }()
	go func() { d.serveErr <- d.srv.ServeAdmin(d.admLn) }()
	log.Info("listening", "ingress", d.ingLn.Addr().String(), "admin", d.admLn.Addr().String())
	return true
}

// engineOptions are the engine's options from the command line.
func (d *daemon) engineOptions() engine.Options {
	c := d.c
	opts := engine.Options{
		DataDir:            c.dataDir,
		Shards:             c.shards,
		MemoryBudget:       int64(c.memoryBudget),
		MaxMessageBytes:    int(c.maxBody),
		MaxQueuedBytes:     int64(c.maxQueuedBytes),
		MailboxCapacity:    c.mailboxCapacity,
		MaxBatchDelay:      c.maxBatchDelay,
		CheckpointInterval: c.checkpointInterval,
		AcceptLogLoss:      c.acceptLogLoss,
		Logger:             d.log,
		TracerProvider:     d.tr.Provider(),
	}
	if opts.Shards == 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	return opts
}

// openEngine opens and recovers the engine and hands it to the HTTP
// server. A stop asked for during recovery waits for the recovery to end,
// then closes the engine: ok is false then, as on a failure, and status is
// the exit status.
func (d *daemon) openEngine(stop <-chan os.Signal) (status int, ok bool) {
	c, log, srvOpts := d.c, d.log, d.srv.Options()
	opts := d.engineOptions()
	log.Info("starting", "data_dir", opts.DataDir, "shards", opts.Shards, "memory_budget", opts.MemoryBudget,
		"max_batch_delay", opts.MaxBatchDelay, "checkpoint_interval", opts.CheckpointInterval,
		"max_body", int64(c.maxBody), "module", c.module, "state_api", c.stateAPI, "rides", !c.noRides,
		"max_conns", srvOpts.MaxConns, "max_conns_per_client", srvOpts.MaxConnsPerClient,
		"max_body_in_flight", srvOpts.MaxBodyBytesInFlight, "max_egress_bytes", srvOpts.MaxEgressBytes,
		"max_egress_reads", srvOpts.MaxEgressReads, "max_queued_bytes", opts.MaxQueuedBytes,
		"mailbox_capacity", opts.MailboxCapacity,
		"go_memory_limit", debug.SetMemoryLimit(-1),
		"rss_bound", memmodel.Bound(c.memParams(srvOpts.MaxConns, srvOpts.MaxBodyBytesInFlight)),
		"file_limit", httpapi.FileLimit(),
		"function_types", len(d.specs), "go", runtime.Version(), "pid", os.Getpid())

	type opened struct {
		e   *engine.Engine
		err error
	}
	openStart := time.Now()
	openc := make(chan opened, 1)
	go func() {
		e, err := engine.Open(opts, d.specs...)
		openc <- opened{e, err}
	}()
	select {
	case o := <-openc:
		if o.err != nil {
			log.Error("engine failed to open", "data_dir", opts.DataDir, "err", o.err)
			shutdownServer(d.srv, log, time.Second)
			d.closeRemote()
			return 1, false
		}
		d.eng = o.e
	case sig := <-stop:
		log.Info("stopping during recovery", "signal", sig.String())
		shutdownServer(d.srv, log, time.Second)
		o := <-openc // a second signal exits at once
		if o.err == nil {
			_ = o.e.Close()
		}
		d.closeRemote()
		return 0, false
	}
	if err := d.srv.SetEngine(d.eng); err != nil {
		log.Error("cannot serve the engine", "err", err)
		_ = d.eng.Close()
		d.closeRemote()
		return 1, false
	}
	eff := d.eng.Options()
	rec := d.eng.Recovery()
	log.Info("ready", "open_seconds", time.Since(openStart).Seconds(), "replayed_records", rec.Records,
		"replayed_bytes", rec.Bytes, "pending_restored", rec.Pending, "timers_restored", rec.Timers, "shards", eff.Shards,
		"memory_budget", eff.MemoryBudget, "checkpoint_interval", eff.CheckpointInterval,
		"ingress", d.ingLn.Addr().String(), "admin", d.admLn.Addr().String())
	return 0, true
}

// startKafka runs the Kafka ingresses and egresses against the open
// engine.
func (d *daemon) startKafka() bool {
	var err error
	d.kr, err = kafka.Start(d.eng, d.kcfg, kafka.Options{Logger: d.log, Metrics: d.kmetrics})
	if err != nil {
		d.log.Error("cannot start the Kafka ingresses and egresses", "err", err)
		_ = d.eng.Close()
		d.closeRemote()
		return false
	}
	return true
}

// serve serves until a stop or a listener's failure, then shuts down: it
// drains the ingress, stops Kafka, closes the engine (which checkpoints)
// and the listeners. It returns the exit status.
func (d *daemon) serve(stop <-chan os.Signal) int {
	watchDone := make(chan struct{})
	go d.watchFailedStop(watchDone)
	status := 0
	select {
	case <-stop:
	case err := <-d.serveErr:
		d.log.Error("listener failed", "err", err)
		status = 1
	}
	close(watchDone)
	d.drain()
	closeStart := time.Now()
	if !d.closeEngine() {
		status = 1
	}
	closeSeconds := time.Since(closeStart).Seconds()
	d.closeRemote()
	shutdownServer(d.srv, d.log, 2*time.Second)
	d.log.Info("shutdown complete", "exit_status", status, "engine_close_seconds", closeSeconds)
	return status
}

// watchFailedStop logs a failed stop once; /health then answers 503. It
// returns when done is closed.
func (d *daemon) watchFailedStop(done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if err := d.eng.Err(); err != nil {
				d.log.Error("failed stop", "err", err, "action", "the engine stopped after a storage error; /health answers 503; restart the server")
				return
			}
		}
	}
}

// drain stops the ingress, waiting up to --shutdown-timeout for requests
// in flight, and stops Kafka: it stops fetching, waits for the batches the
// engine took, records and commits the positions, and stops shipping
// egress.
func (d *daemon) drain() {
	d.log.Info("shutting down", "draining_for_at_most", d.c.shutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), d.c.shutdownTimeout)
	defer cancel()
	if err := d.srv.ShutdownIngress(ctx); err != nil {
		d.log.Warn("ingress did not drain in time; requests in flight were cut off", "err", err)
	}
	d.kr.Close(ctx)
}

// closeEngine closes the engine, waiting at most --shutdown-timeout; it
// reports whether the close finished without error.
func (d *daemon) closeEngine() bool {
	closed := make(chan error, 1)
	go func() { closed <- d.eng.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			d.log.Error("engine close failed", "err", err)
			return false
		}
		return true
	case <-time.After(d.c.shutdownTimeout):
		// A storage that hangs (a flush that never returns) must not hang
		// the shutdown: what was acknowledged is in the log already.
		d.log.Error("engine close did not finish within --shutdown-timeout; exiting without its final checkpoint (recovery replays the log)", "timeout", d.c.shutdownTimeout)
		return false
	}
}

// closeRemote closes the remote client, if any; it may be called again.
func (d *daemon) closeRemote() { closeRemote(d.rc, d.log) }

// shutdownTracing exports the spans still buffered (for at most 5 s).
func shutdownTracing(tr *tracing.Tracing, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans still buffered at exit were not all exported", "err", err)
	}
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
