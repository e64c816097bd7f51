// Command kafkabench measures Kafka in -> function -> Kafka out through
// shardfn (a Kafka ingress, an embedded function, an exactly-once Kafka
// egress, a durable engine) beside a bare franz-go consume -> produce pipe
// that commits the same way (one transaction per batch of up to 1000
// records, the consumed position committed inside it), in the same run,
// against an in-process kfake cluster of three brokers (a test cluster, not
// Kafka: every figure is "on kfake").
//
// Two measures per target:
//   - throughput: N records are in the input topic before the pipeline
//     starts; records/s = N / the time until a read_committed consumer has
//     read all N outputs;
//   - latency: records produced at a fixed rate (open loop); end-to-end
//     latency = the time a read_committed consumer reads an output minus
//     the time its input was produced (in the record), p50 and p99.
//
// It writes results/kafka.md (machine, Go version, commit, command).
//
//	go run ./cmd/kafkabench [--records 100000] [--rate 2000] [--seconds 10]
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/kafka"
	"github.com/shardfn/shardfn/loadgen/report"
	"github.com/shardfn/shardfn/remote"
)

type config struct {
	records    int
	keys       int
	rate       int
	seconds    int
	size       int
	shards     int
	out        string
	dataDir    string
	batch      int
	partitions int
	pending    int
}

type result struct {
	name       string
	recsPerSec float64
	p50, p99   time.Duration
	latCount   int64
	achieved   float64
}

func main() {
	c := config{}
	flag.IntVar(&c.records, "records", 100000, "records of the throughput measure")
	flag.IntVar(&c.keys, "keys", 1000, "distinct record keys (function instances)")
	flag.IntVar(&c.rate, "rate", 2000, "records/s of the latency measure (open loop)")
	flag.IntVar(&c.seconds, "seconds", 10, "duration of the latency measure")
	flag.IntVar(&c.size, "size", 100, "record value bytes")
	flag.IntVar(&c.shards, "shards", 0, "engine shards (0: GOMAXPROCS)")
	flag.StringVar(&c.out, "out", "results/kafka.md", "report file ('' for none)")
	flag.StringVar(&c.dataDir, "data-dir", "", "engine data directory (default: a temporary one)")
	flag.IntVar(&c.partitions, "partitions", 3, "partitions of every topic")
	flag.IntVar(&c.batch, "batch", 0, "kafka.Options.BatchRecords (0: the default)")
	flag.IntVar(&c.pending, "max-pending", 0, "kafka.Options.MaxPendingRecords (0: the default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run here")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kafkabench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "kafkabench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(c config) error {
	cl, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(int32(c.partitions), "pipe-in", "pipe-out", "fn-in", "fn-out"))
	if err != nil {
		return err
	}
	defer cl.Close()
	addrs := cl.ListenAddrs()
	dir := c.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "kafkabench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	mach := report.Machine(dir)

	// Throughput: preload both input topics, then run each pipeline.
	for _, t := range []string{"pipe-in", "fn-in"} {
		if err := preload(addrs, t, c); err != nil {
			return err
		}
	}
	pipeT, err := measureThroughput(addrs, "pipe-out", c.records, func(ctx context.Context) (func(), error) {
		return startPipe(ctx, addrs, "pipe-in", "pipe-out")
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pipe: %.0f records/s\n", pipeT)
	fnT, err := measureThroughput(addrs, "fn-out", c.records, func(ctx context.Context) (func(), error) {
		return startShardfn(addrs, "fn-in", "fn-out", dir, c)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "shardfn: %.0f records/s\n", fnT)

	// Latency at a fixed rate, fresh topics and groups.
	for _, t := range []string{"pipe-in2", "pipe-out2", "fn-in2", "fn-out2"} {
		if err := createTopic(addrs, t, c.partitions); err != nil {
			return err
		}
	}
	pipeL, err := measureLatency(addrs, "pipe-in2", "pipe-out2", c, func(ctx context.Context) (func(), error) {
		return startPipe(ctx, addrs, "pipe-in2", "pipe-out2")
	})
	if err != nil {
		return err
	}
	fnL, err := measureLatency(addrs, "fn-in2", "fn-out2", c, func(ctx context.Context) (func(), error) {
		return startShardfn(addrs, "fn-in2", "fn-out2", dir+"-lat", c)
	})
	os.RemoveAll(dir + "-lat")
	if err != nil {
		return err
	}
	pipeL.recsPerSec, fnL.recsPerSec = pipeT, fnT
	pipeL.name, fnL.name = "bare franz-go pipe (transactional consume -> produce)", "shardfn (Kafka ingress -> embedded function -> exactly-once egress)"
	rep := renderReport(c, mach, pipeL, fnL)
	fmt.Print(rep)
	if c.out != "" {
		if err := os.MkdirAll(filepath.Dir(c.out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(c.out, []byte(rep), 0o644)
	}
	return nil
}

func value(c config, key int) []byte {
	v := make([]byte, max(c.size, 8))
	binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
	_ = key
	return v
}

func preload(addrs []string, topic string, c config) error {
	p, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer p.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var perr error
	var mu sync.Mutex
	for i := 0; i < c.records; i++ {
		wg.Add(1)
		p.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%c.keys)), Value: value(c, i)}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				perr = err
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return perr
}

func createTopic(addrs []string, topic string, partitions int) error {
	p, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return err
	}
	defer p.Close()
	_, err = kadm.NewClient(p).CreateTopic(context.Background(), int32(partitions), -1, nil, topic)
	return err
}

func newReader(addrs []string, topic string) (*kgo.Client, error) {
	return kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
}

func measureThroughput(addrs []string, out string, n int, start func(context.Context) (func(), error)) (float64, error) {
	rd, err := newReader(addrs, out)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	stop, err := start(ctx)
	if err != nil {
		return 0, err
	}
	defer stop()
	got := 0
	for got < n {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s: %d of %d outputs before the timeout", out, got, n)
		}
		got += fs.NumRecords()
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

func measureLatency(addrs []string, in, out string, c config, start func(context.Context) (func(), error)) (result, error) {
	var res result
	rd, err := newReader(addrs, out)
	if err != nil {
		return res, err
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(c.seconds+120)*time.Second)
	defer cancel()
	stop, err := start(ctx)
	if err != nil {
		return res, err
	}
	defer stop()
	p, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(in), kgo.ProducerLinger(0))
	if err != nil {
		return res, err
	}
	defer p.Close()
	total := c.rate * c.seconds
	go func() {
		t0 := time.Now()
		for i := 0; i < total && ctx.Err() == nil; i++ {
			if d := time.Until(t0.Add(time.Duration(i) * time.Second / time.Duration(c.rate))); d > 0 {
				time.Sleep(d)
			}
			p.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%c.keys)), Value: value(c, i)}, nil)
		}
	}()
	h := hdrhistogram.New(1, 60_000_000, 3) // µs
	got := 0
	first, last := time.Time{}, time.Time{}
	for got < total {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return res, fmt.Errorf("%s: %d of %d outputs before the timeout", out, got, total)
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Value) >= 8 {
				sent := time.Unix(0, int64(binary.BigEndian.Uint64(r.Value)))
				_ = h.RecordValue(max(1, now.Sub(sent).Microseconds()))
			}
			if first.IsZero() {
				first = now
			}
			last = now
			got++
		})
	}
	res.p50 = time.Duration(h.ValueAtQuantile(50)) * time.Microsecond
	res.p99 = time.Duration(h.ValueAtQuantile(99)) * time.Microsecond
	res.latCount = h.TotalCount()
	if d := last.Sub(first).Seconds(); d > 0 {
		res.achieved = float64(got) / d
	}
	return res, nil
}

// startPipe is the baseline: a group transact session that copies each
// polled batch (up to 1000 records) to out in one transaction which also
// commits the consumed offsets.
func startPipe(ctx context.Context, addrs []string, in, out string) (func(), error) {
	s, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(addrs...), kgo.ConsumerGroup("pipe-"+in), kgo.ConsumeTopics(in),
		kgo.TransactionalID("pipe-"+in), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pctx.Err() == nil {
			fs := s.PollRecords(pctx, 1000)
			if fs.NumRecords() == 0 {
				continue
			}
			if err := s.Begin(); err != nil {
				fmt.Fprintln(os.Stderr, "pipe begin:", err)
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				s.Produce(pctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value}, nil)
			})
			if _, err := s.End(pctx, kgo.TryCommit); err != nil && pctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "pipe end:", err)
			}
		}
	}()
	return func() { cancel(); <-done; s.Close() }, nil
}

var copySpec = engine.FunctionSpec{Namespace: "bench", Type: "copy", Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
	kafka.Write(ctx, "bench/out", kafka.Record{Topic: outTopic(msg.Type), Key: ctx.Self().ID, Value: msg.Value})
	return nil
})}

// outTopic: the message type is "bench/<output topic>".
func outTopic(typ string) string { return strings.TrimPrefix(typ, "bench/") }

// startShardfn opens a durable engine with bench/copy and the Kafka runner
// of a module.yaml: ingress in -> bench/copy -> egress bench/out
// (exactly-once) -> out.
func startShardfn(addrs []string, in, out, dir string, c config) (func(), error) {
	y := fmt.Sprintf(`kind: io.statefun.kafka.v1/ingress
spec:
  id: bench/in
  address: %[1]s
  consumerGroupId: fn-%[2]s
  startupPosition: {type: earliest}
  topics:
    - topic: %[2]s
      valueType: bench/%[3]s
      targets: [bench/copy]
---
kind: io.statefun.kafka.v1/egress
spec:
  id: bench/out
  address: %[1]s
  deliverySemantic: {type: exactly-once, transactionTimeout: 1min}
`, strings.Join(addrs, ","), in, out)
	m, err := remote.ParseModule(strings.NewReader(y))
	if err != nil {
		return nil, err
	}
	cfg, err := kafka.Parse(m.Components)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	shards := c.shards
	if shards == 0 {
		shards = runtime.GOMAXPROCS(0)
	}
	eng, err := engine.Open(engine.Options{DataDir: dir, Shards: shards, Logger: log}, append(kafka.Specs(), copySpec)...)
	if err != nil {
		return nil, err
	}
	r, err := kafka.Start(eng, cfg, kafka.Options{Logger: log, BatchRecords: c.batch, MaxPendingRecords: c.pending})
	if err != nil {
		eng.Close()
		return nil, err
	}
	return func() { r.Close(context.Background()); eng.Close() }, nil
}

func renderReport(c config, m report.MachineInfo, pipe, fn result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Kafka in -> function -> Kafka out, on kfake\n\n")
	fmt.Fprintf(&b, "Written by `go run ./cmd/kafkabench --records %d --keys %d --rate %d --seconds %d --size %d --partitions %d` at %s UTC.\n\n",
		c.records, c.keys, c.rate, c.seconds, c.size, c.partitions, time.Now().UTC().Format("2006-01-02 15:04:05"))
	fmt.Fprintf(&b, "**Every figure is on kfake**: franz-go's in-process Kafka-protocol test cluster (three brokers on loopback, in the benchmark's own process, no replication, no disk), not Kafka. ")
	fmt.Fprintf(&b, "Both pipelines run in the same process, in the same run, against the same cluster, one after the other.\n\n")
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s memory, %s; %s; %s; commit %s.\n\n", m.CPU, m.Cores, report.Bytes(m.MemBytes), m.Disk, m.Kernel, m.GoVersion, m.Commit)
	fmt.Fprintf(&b, "- **bare pipe**: a franz-go `GroupTransactSession` consuming the input topic (read_committed) and producing each polled batch (up to 1000 records) in one transaction that also commits the consumed offsets.\n")
	fmt.Fprintf(&b, "- **shardfn**: a `io.statefun.kafka.v1/ingress` (each record a message keyed `kafka/<ingress>/<topic>/<partition>/<offset>`, batches acknowledged once durable in the engine's log, fsync'd) -> the embedded function `bench/copy` (writes the value to a Kafka egress record) -> a durable egress log -> an `exactly-once` `io.statefun.kafka.v1/egress` (one transaction per batch of up to 1000 egress records, the shipped egress offset committed inside it).\n\n")
	fmt.Fprintf(&b, "Throughput: %d records (%d-byte values, %d keys, %d partitions) in the input topic before the pipeline starts; records/s until a read_committed consumer read all outputs. ", c.records, c.size, c.keys, c.partitions)
	fmt.Fprintf(&b, "Latency: %d records/s for %d s (open loop); end-to-end = output read (read_committed) minus input produced.\n\n", c.rate, c.seconds)
	fmt.Fprintf(&b, "| pipeline | records/s (on kfake) | latency p50 ms (on kfake) | latency p99 ms (on kfake) | latency records |\n|---|---:|---:|---:|---:|\n")
	for _, r := range []result{pipe, fn} {
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %d |\n", r.name, r.recsPerSec, ms(r.p50), ms(r.p99), r.latCount)
	}
	fmt.Fprintf(&b, "\nshardfn / pipe records/s: **%.0f %%** (on kfake).\n", 100*fn.recsPerSec/pipe.recsPerSec)
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
