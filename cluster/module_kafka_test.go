package cluster

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	kafkaexample "github.com/shardfn/shardfn/examples/kafka"
	"github.com/shardfn/shardfn/kafka"
)

// TestModuleKafkaIngressEgress: a module's Kafka ingress (topic "events",
// key = counter id) and exactly-once Kafka egress (topic "counts") work in
// cluster mode: two nodes read the ingress topic in their transactions and
// write the egress records in them, across a node restart; every event
// yields exactly one "counts" record, and each counter counts 1, 2, 3, ...
// with no gap and no repeat.
func TestModuleKafkaIngressEgress(t *testing.T) {
	c := newTestCluster(t, 8, kfake.SeedTopics(4, "events"), kfake.SeedTopics(1, "counts"))
	brokers := c.kf.ListenAddrs()
	c.specs = append(kafkaexample.Specs(), kafka.Specs()...)
	c.config = func(cfg *Config) {
		cfg.KafkaIngress = []kafka.IngressSpec{{ID: "example/events", Brokers: brokers,
			Topics: []kafka.IngressTopic{{Topic: "events", ValueType: "example/text",
				Targets: []kafka.FunctionType{{Namespace: kafkaexample.Namespace, Type: kafkaexample.Type}}}}}}
		cfg.KafkaEgress = []kafka.EgressSpec{{ID: kafkaexample.EgressID, Brokers: brokers, Semantic: kafka.SemanticExactlyOnce}}
	}
	c.start("a")
	c.start("b")
	c.settled(30 * time.Second)
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const keys, events = 10, 300
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i%keys)), Value: []byte("e" + strconv.Itoa(i))}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(0, events/2)
	c.stop("b", false) // a restart: b comes back to its partitions
	c.start("b")
	produce(events/2, events)
	c.settled(30 * time.Second)

	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("counts"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	seen := map[string][]int{}
	total := 0
	for total < events {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d counts records after 60 s: %v", total, events, seen)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n, _ := strconv.Atoi(strings.Fields(string(r.Value))[0])
			seen[string(r.Key)] = append(seen[string(r.Key)], n)
			total++
		})
	}
	more, stop := context.WithTimeout(ctx, time.Second) // nothing more may come
	fs := cons.PollRecords(more, 1)
	stop()
	if n := fs.NumRecords(); n > 0 {
		t.Fatalf("more counts records than events: %d extra", n)
	}
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		got := seen[key]
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("counter %s: counts %v: want 1, 2, ..., %d (a repeat or a gap)", key, got, events/keys)
			}
		}
		if len(got) != events/keys {
			t.Fatalf("counter %s: %d counts records, want %d", key, len(got), events/keys)
		}
	}
}
