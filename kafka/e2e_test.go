package kafka

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// TestEndToEnd: Kafka records -> test/counter -> Kafka records, with each
// delivery semantic; every input applied once and in order per key, every
// output present once (read_committed).
func TestEndToEnd(t *testing.T) {
	for _, sem := range []string{"exactly-once", "at-least-once", "none"} {
		t.Run(sem, func(t *testing.T) {
			c := newCluster(t, "in", "out")
			addrs := c.ListenAddrs()
			const keys, n = 10, 30
			produce(t, addrs, "in", keys, n, 0)
			eng := openEngine(t, t.TempDir(), engine.Options{})
			defer eng.Close()
			r, err := Start(eng, parseConfig(t, moduleYAML(addrs, sem)), Options{Logger: testLogger(), CommitInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			rd := newReader(t, addrs, "out")
			if got := rd.until(keys*n, 30*time.Second); got != keys*n {
				t.Errorf("%d outputs, want %d", got, keys*n)
			}
			r.Close(context.Background())
			checkCounts(t, rd.got, keys, n)
		})
	}
}

// startRunner starts the Kafka runner of y on eng.
func startRunner(t *testing.T, eng *engine.Engine, y string, opts Options) *Runner {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 50 * time.Millisecond
	}
	r, err := Start(eng, parseConfig(t, y), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRedeliveryDeduplicated: an ingress stopped as by a crash, before it
// recorded any position, reads every record again after the restart; the
// idempotency keys in the consuming records apply each once. The engine is
// closed and reopened in between (keys survive in the store).
func TestRedeliveryDeduplicated(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	const keys, n = 8, 40
	produce(t, addrs, "in", keys, n/2, 0)
	dir := t.TempDir()
	eng := openEngine(t, dir, engine.Options{})
	y := moduleYAML(addrs, "exactly-once")
	r := startRunner(t, eng, y, Options{CommitInterval: time.Hour}) // no position but the start is recorded
	rd := newReader(t, addrs, "out")
	if got := rd.until(keys*n/2, 30*time.Second); got != keys*n/2 {
		t.Fatalf("%d outputs before the crash, want %d", got, keys*n/2)
	}
	for _, in := range r.Ingresses {
		in.abandon()
	}
	for _, e := range r.Egresses {
		e.Close()
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	produce(t, addrs, "in", keys, n/2, n/2)
	eng = openEngine(t, dir, engine.Options{})
	defer eng.Close()
	r = startRunner(t, eng, y, Options{})
	defer r.Close(context.Background())
	rd.until(keys*n, 30*time.Second)
	rd.until(keys*n+1, 500*time.Millisecond) // duplicates, if any
	checkCounts(t, rd.got, keys, n)
}

// TestBackpressure: mailboxes far smaller than the backlog: the ingress
// meets ErrOverloaded, pauses and retries, and nothing is lost or doubled.
func TestBackpressure(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	const keys, n = 20, 100
	produce(t, addrs, "in", keys, n, 0)
	eng := openEngine(t, t.TempDir(), engine.Options{MailboxCapacity: 16})
	defer eng.Close()
	m := NewMetrics()
	r := startRunner(t, eng, moduleYAML(addrs, "exactly-once"), Options{Metrics: m, BatchRecords: 50, MaxPendingRecords: 20})
	defer r.Close(context.Background())
	rd := newReader(t, addrs, "out")
	rd.until(keys*n, 60*time.Second)
	rd.until(keys*n+1, 300*time.Millisecond)
	checkCounts(t, rd.got, keys, n)
	if v := counterValue(t, m.pauses); v == 0 {
		t.Errorf("fetching was never paused (MaxPendingRecords 20, %d records)", keys*n)
	}
}

// TestRebalance: two members of the group on one engine; one leaves half
// way; its partitions move to the other, which resumes at the recorded
// positions: every record applied once.
func TestRebalance(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	const keys, n = 12, 60
	produce(t, addrs, "in", keys, n/2, 0)
	eng := openEngine(t, t.TempDir(), engine.Options{})
	defer eng.Close()
	y := moduleYAML(addrs, "exactly-once")
	r1 := startRunner(t, eng, y, Options{})
	cfg := parseConfig(t, y)
	cfg.Egresses = nil // one shipper
	r2, err := Start(eng, cfg, Options{Logger: testLogger(), CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rd := newReader(t, addrs, "out")
	rd.until(keys*n/4, 30*time.Second)
	produce(t, addrs, "in", keys, n/2, n/2)
	r2.Close(context.Background())
	defer r1.Close(context.Background())
	rd.until(keys*n, 60*time.Second)
	rd.until(keys*n+1, 300*time.Millisecond)
	checkCounts(t, rd.got, keys, n)
}

// TestEgressWhileKafkaDown: the egress's brokers are not there; the engine
// goes on processing (the egress log is the buffer) and everything is
// shipped, once, when a broker comes up on that address.
func TestEgressWhileKafkaDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	y := fmt.Sprintf("kind: io.statefun.kafka.v1/egress\nspec:\n  id: test/out\n  address: %s\n  deliverySemantic:\n    type: exactly-once\n    transactionTimeout: 30s\n", addr)
	eng := openEngine(t, t.TempDir(), engine.Options{})
	defer eng.Close()
	m := NewMetrics()
	r := startRunner(t, eng, y, Options{Metrics: m})
	defer r.Close(context.Background())
	const keys, n = 5, 20
	ctx := context.Background()
	for i := 0; i < n; i++ {
		for k := 0; k < keys; k++ {
			to := engine.Address{Namespace: "test", Type: "counter", ID: "k" + strconv.Itoa(k)}
			if _, err := eng.Send(ctx, to, engine.Message{Type: "test/text", Value: []byte(fmt.Sprintf("k%d-%d", k, i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := r.Egresses[0].Shipped(); s != 0 {
		t.Fatalf("shipped %d with no broker", s)
	}
	time.Sleep(600 * time.Millisecond)
	if lag := gaugeValue(t, m.shipLag); lag != keys*n {
		t.Errorf("shipping lag %v, want %d", lag, keys*n)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := newReader(t, []string{addr}, "out")
	rd.until(keys*n, 60*time.Second)
	rd.until(keys*n+1, 300*time.Millisecond)
	checkCounts(t, rd.got, keys, n)
}

// TestDeadLetters: records with no key, a key too long, or for an
// unregistered target go to dead-letters with topic, partition and offset;
// egress records that are not Kafka records too. The others are applied.
func TestDeadLetters(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	y := strings.Replace(moduleYAML(addrs, "at-least-once"), "        - test/counter", "        - test/counter\n        - test/nobody", 1)
	eng := openEngine(t, t.TempDir(), engine.Options{})
	defer eng.Close()
	r := startRunner(t, eng, y, Options{})
	defer r.Close(context.Background())
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("in"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Partition: 1, Value: []byte("no key")},
		&kgo.Record{Partition: 1, Key: []byte(strings.Repeat("x", 1025)), Value: []byte("long key")},
		&kgo.Record{Partition: 1, Key: []byte("k0"), Value: []byte("k0-0")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// An embedded function writing a plain record to the Kafka egress.
	if _, err := eng.Send(ctx, engine.Address{Namespace: Namespace, Type: DeadLettersType, ID: "probe"},
		engine.Message{Type: "x/y", Value: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	var dls []engine.DeadLetter
	deadline := time.Now().Add(30 * time.Second)
	for len(dls) < 4 && time.Now().Before(deadline) {
		dls, err = eng.DeadLetters(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var texts []string
	for _, d := range dls {
		texts = append(texts, d.Error)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{
		"kafka ingress test/in: topic in partition 1 offset 0: the record has no key",
		"kafka ingress test/in: topic in partition 1 offset 1: the record key has 1025 bytes",
		"kafka ingress test/in: topic in partition 1 offset 2: engine: unknown function type: test/nobody is not registered",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no dead letter %q in\n%s", want, all)
		}
	}
	for _, d := range dls {
		if strings.Contains(d.Error, "offset 2") && (d.Target != (engine.Address{Namespace: "test", Type: "nobody", ID: "k0"}) || string(d.Message.Value) != "k0-0") {
			t.Errorf("dead letter of the unknown target: %+v", d)
		}
	}
	rd := newReader(t, addrs, "out")
	rd.until(1, 30*time.Second)
	checkCounts(t, rd.got, 1, 1)
}

// TestStartupPositions: a partition the engine never consumed starts where
// startupPosition says; once consumed, a restart resumes at the engine's
// position whatever startupPosition says.
func TestStartupPositions(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("in"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	put := func(vals ...string) {
		var recs []*kgo.Record
		for _, v := range vals {
			recs = append(recs, &kgo.Record{Partition: 0, Key: []byte("k0"), Value: []byte(v)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put("k0-x", "k0-y", "k0-0") // offsets 0, 1, 2
	y := strings.Replace(moduleYAML(addrs, "exactly-once"), "    type: earliest", "    type: specific-offsets\n    offsets:\n      - in/0: 2", 1)
	dir := t.TempDir()
	eng := openEngine(t, dir, engine.Options{})
	r := startRunner(t, eng, y, Options{})
	rd := newReader(t, addrs, "out")
	rd.until(1, 30*time.Second)
	r.Close(ctx)
	eng.Close()
	put("k0-1")
	y = strings.Replace(y, "specific-offsets\n    offsets:\n      - in/0: 2", "latest", 1)
	eng = openEngine(t, dir, engine.Options{})
	defer eng.Close()
	r = startRunner(t, eng, y, Options{})
	defer r.Close(ctx)
	rd.until(2, 30*time.Second)
	rd.until(3, 300*time.Millisecond)
	checkCounts(t, rd.got, 1, 2)
}

func counterValue(t *testing.T, v *prometheus.CounterVec) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	v.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var pm dto.Metric
		if err := m.Write(&pm); err != nil {
			t.Fatal(err)
		}
		sum += pm.GetCounter().GetValue()
	}
	return sum
}

func gaugeValue(t *testing.T, v *prometheus.GaugeVec) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	v.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var pm dto.Metric
		if err := m.Write(&pm); err != nil {
			t.Fatal(err)
		}
		sum += pm.GetGauge().GetValue()
	}
	return sum
}

// TestEgressNewLog: a new data directory (a new egress log, offsets from
// 0 again) with the egress group of an old one: the old log's committed
// position is not this log's, so nothing of the new log is skipped.
func TestEgressNewLog(t *testing.T) {
	c := newCluster(t, "in", "out")
	addrs := c.ListenAddrs()
	y := moduleYAML(addrs, "exactly-once")
	ctx := context.Background()
	rd := newReader(t, addrs, "out")
	for life, key := range []string{"k0", "k1"} {
		eng := openEngine(t, t.TempDir(), engine.Options{})
		r := startRunner(t, eng, y, Options{})
		for i := 0; i < 10; i++ {
			to := engine.Address{Namespace: "test", Type: "counter", ID: key}
			if _, err := eng.Send(ctx, to, engine.Message{Type: "test/text", Value: []byte(fmt.Sprintf("%s-%d", key, i))}); err != nil {
				t.Fatal(err)
			}
		}
		if got := rd.until(10*(life+1), 30*time.Second); got != 10*(life+1) {
			t.Fatalf("life %d: %d outputs, want %d", life, got, 10*(life+1))
		}
		r.Close(ctx)
		eng.Close()
	}
	checkCounts(t, rd.got, 2, 10)
}

// TestSASLProperties: the StateFun-style security properties reach the
// client: a SASL/SCRAM cluster is consumed and produced to with
// sasl.jaas.config credentials, and refused without them.
func TestSASLProperties(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "in", "out"), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "admin", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	props := "  properties:\n    - security.protocol: SASL_PLAINTEXT\n    - sasl.mechanism: SCRAM-SHA-256\n" +
		"    - sasl.jaas.config: org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"s3cret\";\n"
	y := moduleYAML(addrs, "exactly-once")
	y = strings.Replace(y, "---\n", props+"---\n", 1) + props
	cfg := parseConfig(t, y)
	auth := cfg.Ingresses[0].Client.Opts
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("in")}, auth...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k0"), Value: []byte("k0-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eng := openEngine(t, t.TempDir(), engine.Options{})
	defer eng.Close()
	r, err := Start(eng, cfg, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	rd, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("out"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted())}, auth...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var got []string
	for len(got) == 0 && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 1 || got[0] != "1 k0-0" {
		t.Fatalf("outputs %q", got)
	}
	// Without credentials the broker refuses.
	bad, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if err := bad.Ping(pctx); err == nil {
		t.Error("the cluster answered a client without credentials: the test proves nothing")
	}
}
