package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/remote"
)

// testLogger is quiet unless SHARDFN_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("SHARDFN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newCluster starts an in-process Kafka-protocol cluster (kfake: a test
// cluster, not Kafka) of three brokers on loopback, with topics of 3
// partitions.
func newCluster(t testing.TB, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topics...)) // listens on 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// counterFn is the test function: test/counter counts its messages and
// writes "<count> <payload>" to the Kafka egress test/out, topic out (key =
// its id).
var countSpec = engine.ValueSpec{Name: "count", Type: engine.TypeLong}

func counterSpecs() []engine.FunctionSpec {
	return append(Specs(), engine.FunctionSpec{Namespace: "test", Type: "counter", States: []engine.ValueSpec{countSpec},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			n, _, err := ctx.GetInt64(countSpec)
			if err != nil {
				return err
			}
			n++
			if err := ctx.SetInt64(countSpec, n); err != nil {
				return err
			}
			Write(ctx, "test/out", Record{Topic: "out", Key: ctx.Self().ID,
				Value: []byte(strconv.FormatInt(n, 10) + " " + string(msg.Value))})
			return nil
		})})
}

func openEngine(t testing.TB, dir string, opts engine.Options) *engine.Engine {
	t.Helper()
	opts.DataDir = dir
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	opts.Logger = testLogger()
	e, err := engine.Open(opts, counterSpecs()...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// parseConfig parses a module.yaml's Kafka documents.
func parseConfig(t testing.TB, y string) *Config {
	t.Helper()
	m, err := remote.ParseModule(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(m.Components)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// moduleYAML routes topic in to test/counter and ships test/out.
func moduleYAML(addrs []string, semantic string) string {
	sem := "type: " + semantic
	if semantic == "exactly-once" {
		sem += "\n    transactionTimeout: 30s"
	}
	return fmt.Sprintf(`kind: io.statefun.kafka.v1/ingress
spec:
  id: test/in
  address: %[1]s
  consumerGroupId: test-group
  startupPosition:
    type: earliest
  topics:
    - topic: in
      valueType: test/text
      targets:
        - test/counter
---
kind: io.statefun.kafka.v1/egress
spec:
  id: test/out
  address: %[1]s
  deliverySemantic:
    %[2]s
`, strings.Join(addrs, ","), sem)
}

// produce writes n records per key for keys k0..k(keys-1), values
// "<key>-<i>", in order per key, and returns them per key.
func produce(t testing.TB, addrs []string, topic string, keys, n, from int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		for k := 0; k < keys; k++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(k)), Value: []byte(fmt.Sprintf("k%d-%d", k, i))})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// outputs reads topic with read_committed until want records per key came
// (or the timeout), and returns the values per key.
type reader struct {
	cl  *kgo.Client
	got map[string][]string
	n   int
}

func newReader(t testing.TB, addrs []string, topic string) *reader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &reader{cl: cl, got: map[string][]string{}}
}

// until reads until total records came or d passed; it returns the count.
func (r *reader) until(total int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for r.n < total && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := r.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(rec *kgo.Record) {
			r.got[string(rec.Key)] = append(r.got[string(rec.Key)], string(rec.Value))
			r.n++
		})
	}
	return r.n
}

// checkCounts checks that key k's outputs are "1 k-from", "2 k-(from+1)"
// ... for n inputs: every input applied once, in order, every output once.
func checkCounts(t testing.TB, got map[string][]string, keys, n int) {
	t.Helper()
	for k := 0; k < keys; k++ {
		key := "k" + strconv.Itoa(k)
		vs := got[key]
		bad := len(vs) != n
		for i := 0; !bad && i < n; i++ {
			bad = vs[i] != fmt.Sprintf("%d k%d-%d", i+1, k, i)
		}
		if bad {
			t.Errorf("key %s: %d outputs, want %d in order; first differences: %s", key, len(vs), n, firstDiff(vs, k, n))
		}
	}
	var extra []string
	for key := range got {
		if !strings.HasPrefix(key, "k") {
			extra = append(extra, key)
		}
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		t.Errorf("unexpected keys %q", extra)
	}
}

func firstDiff(vs []string, k, n int) string {
	var out []string
	for i := 0; i < max(len(vs), n) && len(out) < 5; i++ {
		want := fmt.Sprintf("%d k%d-%d", i+1, k, i)
		have := "(none)"
		if i < len(vs) {
			have = vs[i]
		}
		if have != want {
			out = append(out, fmt.Sprintf("[%d] have %q want %q", i, have, want))
		}
	}
	return strings.Join(out, "; ")
}
