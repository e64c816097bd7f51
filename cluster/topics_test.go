package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// newKafka starts an in-process Kafka-protocol cluster (kfake: a test
// cluster, not Kafka) of three brokers on loopback, with no topics.
func newKafka(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// partitionCounts returns the partition count of each named topic that
// exists, asking a broker directly (kadm's ListTopics may answer from a
// metadata cache).
func partitionCounts(t *testing.T, cl *kgo.Client, topics ...string) map[string]int {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, rt := range resp.Topics {
		if rt.ErrorCode == 0 {
			out[*rt.Topic] = len(rt.Partitions)
		}
	}
	return out
}

// topicConfig returns the value of config key of topic as the broker
// describes it.
func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe configs of %s: %v %v", topic, err, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return "<unset>"
}

// metaRecords returns "key=value" of every record in Meta, in order.
func metaRecords(t *testing.T, c *kfake.Cluster, meta string) []string {
	t.Helper()
	cl := newClient(t, c, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{meta: {0: kgo.NewOffset().AtStart()}}))
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), meta)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(meta, 0)
	var out []string
	ctx := testCtx(t)
	for int64(len(out)) < end.Offset {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: %v after %q", meta, err, out)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Key)+"="+string(r.Value)) })
	}
	return out
}

func TestTopicsCreate(t *testing.T) {
	c := newKafka(t)
	cl := newClient(t, c)
	adm := kadm.NewClient(cl)
	topics, p, err := EnsureTopics(testCtx(t), cl, "rides", TopicOptions{Partitions: 16, MinInsyncReplicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := Topics{In: "shardfn.rides.in", Changelog: "shardfn.rides.changelog", Replies: "shardfn.rides.replies", Meta: "shardfn.rides.meta", Egress: "shardfn.rides.egress"}
	if topics != want || topics != TopicNames("rides") || p != 16 {
		t.Fatalf("EnsureTopics = %+v, %d; want %+v, 16", topics, p, want)
	}
	counts := partitionCounts(t, cl, topics.All()...)
	if counts[topics.In] != 16 || counts[topics.Changelog] != 16 || counts[topics.Replies] != 1 || counts[topics.Meta] != 1 {
		t.Errorf("partition counts %v; want in and changelog 16, replies and meta 1", counts)
	}
	for _, c := range []struct{ topic, key, want string }{
		{topics.In, "cleanup.policy", "delete"},
		{topics.In, "retention.ms", "604800000"},
		{topics.Changelog, "cleanup.policy", "compact"},
		{topics.Replies, "cleanup.policy", "delete"},
		{topics.Replies, "retention.ms", "3600000"},
		{topics.Meta, "cleanup.policy", "delete"},
		{topics.Meta, "retention.ms", "-1"},
		{topics.In, "min.insync.replicas", "2"},
		{topics.Changelog, "min.insync.replicas", "2"},
		{topics.Replies, "min.insync.replicas", "2"},
		{topics.Meta, "min.insync.replicas", "2"},
	} {
		if got := topicConfig(t, adm, c.topic, c.key); got != c.want {
			t.Errorf("%s %s = %s; want %s", c.topic, c.key, got, c.want)
		}
	}
	if got := metaRecords(t, c, topics.Meta); len(got) != 1 || got[0] != "partitions=16" {
		t.Errorf("meta records %q; want [partitions=16]", got)
	}

	// Defaults: P 256, In retention as given.
	topics, p, err = EnsureTopics(testCtx(t), cl, "other", TopicOptions{InRetention: 36 * time.Hour})
	if err != nil || p != DefaultPartitions {
		t.Fatalf("default partitions: %d, %v", p, err)
	}
	if counts := partitionCounts(t, cl, topics.In, topics.Changelog); counts[topics.In] != 256 || counts[topics.Changelog] != 256 {
		t.Errorf("default partition counts %v", counts)
	}
	if got := topicConfig(t, adm, topics.In, "retention.ms"); got != "129600000" {
		t.Errorf("in retention.ms = %s; want 129600000", got)
	}
}

func TestTopicsReopen(t *testing.T) {
	c := newKafka(t)
	cl := newClient(t, c)
	if _, p, err := EnsureTopics(testCtx(t), cl, "c1", TopicOptions{Partitions: 32}); err != nil || p != 32 {
		t.Fatalf("create: %d, %v", p, err)
	}
	// A node started later (a fresh client) without --partitions adopts the
	// recorded P; with the same P it is fine too.
	for _, give := range []int32{0, 32, 0} {
		if _, p, err := EnsureTopics(testCtx(t), newClient(t, c), "c1", TopicOptions{Partitions: give}); err != nil || p != 32 {
			t.Errorf("reopen with --partitions %d: %d, %v; want 32", give, p, err)
		}
	}
	_, _, err := EnsureTopics(testCtx(t), cl, "c1", TopicOptions{Partitions: 64})
	want := `cluster "c1" was created with 32 partitions; --partitions 64 does not match (omit --partitions to use 32)`
	if err == nil || err.Error() != want {
		t.Errorf("mismatch: %v; want %s", err, want)
	}
	// Reopening wrote nothing more to Meta.
	if got := metaRecords(t, c, TopicNames("c1").Meta); len(got) != 1 || got[0] != "partitions=32" {
		t.Errorf("meta records %q; want [partitions=32]", got)
	}
}

func TestTopicsBadInput(t *testing.T) {
	c := newKafka(t)
	cl := newClient(t, c)
	long := strings.Repeat("a", 232) // "shardfn." + 232 + ".changelog" = 250
	for _, bad := range []struct {
		name string
		o    TopicOptions
		want string
	}{
		{"", TopicOptions{}, "--cluster-name"},
		{"a b", TopicOptions{}, "letters, digits"},
		{"a/b", TopicOptions{}, "letters, digits"},
		{"zürich", TopicOptions{}, "letters, digits"},
		{long, TopicOptions{}, "use at most 231 characters"},
		{"ok", TopicOptions{Partitions: 3}, "--partitions 3: pass a power of two from 1 to 4096"},
		{"ok", TopicOptions{Partitions: 8192}, "--partitions 8192"},
		{"ok", TopicOptions{Partitions: -4}, "--partitions -4"},
		{"ok", TopicOptions{ReplicationFactor: -2}, "--replication-factor -2"},
		{"ok", TopicOptions{MinInsyncReplicas: -1}, "--min-insync-replicas -1"},
		{"ok", TopicOptions{ReplicationFactor: 2, MinInsyncReplicas: 3}, "--min-insync-replicas 3 exceeds --replication-factor 2"},
		{"ok", TopicOptions{InRetention: -time.Second}, "retention"},
		{"ok", TopicOptions{InRetention: time.Microsecond}, "retention"},
	} {
		_, _, err := EnsureTopics(testCtx(t), cl, bad.name, bad.o)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("EnsureTopics(%q, %+v) = %v; want an error with %q", bad.name, bad.o, err, bad.want)
		}
	}
	if err := ValidateName(long[:231]); err != nil {
		t.Errorf("a 231-character name: %v", err)
	}
	if err := ValidateName("Prod_eu-1.x"); err != nil {
		t.Errorf("Prod_eu-1.x: %v", err)
	}
	// Nothing was created for the rejected calls.
	if ds, err := kadm.NewClient(cl).ListTopics(context.Background()); err != nil || len(ds) != 0 {
		t.Errorf("topics after rejected calls: %v, %v", ds.Names(), err)
	}
	// A replication factor the cluster cannot meet is Kafka's error, wrapped
	// with what was being done and what to pass.
	_, _, err := EnsureTopics(testCtx(t), cl, "ok", TopicOptions{ReplicationFactor: 5})
	if err == nil || !strings.Contains(err.Error(), "create topic shardfn.ok.meta") || !strings.Contains(err.Error(), "--replication-factor") {
		t.Errorf("replication factor 5 of 3 brokers: %v", err)
	}
}

// TestTopicsConcurrent starts nodes that create one cluster at once, some
// with --partitions 16 and some without: all that succeed agree on P, it is
// the first record in Meta, the topics have it, and a node that asked for a
// different P fails with the mismatch error.
func TestTopicsConcurrent(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			c := newKafka(t)
			const nodes = 6
			var (
				wg    sync.WaitGroup
				ps    [nodes]int32
				errs  [nodes]error
				start = make(chan struct{})
			)
			for i := range nodes {
				cl := newClient(t, c)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, ps[i], errs[i] = EnsureTopics(testCtx(t), cl, "race", TopicOptions{Partitions: int32(16 * (i % 2))})
				}()
			}
			close(start)
			wg.Wait()
			recs := metaRecords(t, c, TopicNames("race").Meta)
			if len(recs) == 0 || (recs[0] != "partitions=16" && recs[0] != "partitions=256") {
				t.Fatalf("meta records %q", recs)
			}
			var winner int32 = 16
			if recs[0] == "partitions=256" {
				winner = 256
			}
			t.Logf("meta records %q", recs)
			for i := range nodes {
				asked := int32(16 * (i % 2))
				switch {
				case asked == 0 || asked == winner:
					if errs[i] != nil || ps[i] != winner {
						t.Errorf("node %d (--partitions %d): %d, %v; want %d", i, asked, ps[i], errs[i], winner)
					}
				case errs[i] == nil || !strings.Contains(errs[i].Error(), fmt.Sprintf("created with %d partitions", winner)):
					t.Errorf("node %d (--partitions %d) with %d recorded: %d, %v; want a mismatch error", i, asked, winner, ps[i], errs[i])
				}
			}
			tp := TopicNames("race")
			counts := partitionCounts(t, newClient(t, c), tp.All()...)
			if counts[tp.In] != int(winner) || counts[tp.Changelog] != int(winner) || counts[tp.Meta] != 1 || counts[tp.Replies] != 1 {
				t.Errorf("partition counts %v with %d recorded", counts, winner)
			}
		})
	}
}

// TestTopicsRaceLost: another node records its P between this node's read
// of Meta and its write; this node's record comes second and loses.
func TestTopicsRaceLost(t *testing.T) {
	for _, c := range []struct {
		asked   int32
		wantErr string
	}{
		{16, `cluster "x" was created with 32 partitions by another node at the same time (record at shardfn.x.meta offset 0); --partitions 16 does not match (omit --partitions to use 32)`},
		{0, ""},
	} {
		kf := newKafka(t)
		cl := newClient(t, kf)
		other := newClient(t, kf)
		testHookBeforeRecord = func() {
			r := &kgo.Record{Topic: TopicNames("x").Meta, Key: []byte("partitions"), Value: []byte("32")}
			if err := other.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				t.Error(err)
			}
		}
		_, p, err := EnsureTopics(testCtx(t), cl, "x", TopicOptions{Partitions: c.asked})
		testHookBeforeRecord = nil
		if c.wantErr != "" {
			if err == nil || err.Error() != c.wantErr {
				t.Errorf("--partitions %d: %d, %v; want %s", c.asked, p, err, c.wantErr)
			}
			continue
		}
		if err != nil || p != 32 {
			t.Errorf("--partitions 0 after another node recorded 32: %d, %v", p, err)
		}
		tp := TopicNames("x")
		if counts := partitionCounts(t, cl, tp.In, tp.Changelog); counts[tp.In] != 32 || counts[tp.Changelog] != 32 {
			t.Errorf("partition counts %v; want 32", counts)
		}
		if got := metaRecords(t, kf, tp.Meta); len(got) != 2 || got[0] != "partitions=32" || got[1] != "partitions=256" {
			t.Errorf("meta records %q; want the other node's first, then this node's", got)
		}
	}
}

func TestTopicsMissingRecreated(t *testing.T) {
	c := newKafka(t)
	cl := newClient(t, c)
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	tp := TopicNames("m")
	if _, _, err := EnsureTopics(ctx, cl, "m", TopicOptions{Partitions: 8}); err != nil {
		t.Fatal(err)
	}
	del := func(topics ...string) {
		t.Helper()
		rs, err := adm.DeleteTopics(ctx, topics...)
		if err == nil {
			err = rs.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// In, changelog and replies deleted: recreated with the recorded P.
	del(tp.In, tp.Changelog, tp.Replies)
	if _, p, err := EnsureTopics(ctx, cl, "m", TopicOptions{}); err != nil || p != 8 {
		t.Fatalf("reopen after deleting in, changelog, replies: %d, %v", p, err)
	}
	if counts := partitionCounts(t, cl, tp.All()...); counts[tp.In] != 8 || counts[tp.Changelog] != 8 || counts[tp.Replies] != 1 {
		t.Errorf("recreated partition counts %v", counts)
	}
	if got := topicConfig(t, adm, tp.Changelog, "cleanup.policy"); got != "compact" {
		t.Errorf("recreated changelog cleanup.policy = %s", got)
	}

	// Meta deleted, in and changelog kept: P comes from their partition
	// count, and is recorded again.
	del(tp.Meta)
	if _, _, err := EnsureTopics(ctx, cl, "m", TopicOptions{Partitions: 16}); err == nil ||
		!strings.Contains(err.Error(), "topic shardfn.m.in exists with 8 partitions; --partitions 16 does not match") {
		t.Errorf("--partitions 16 against an in topic of 8: %v", err)
	}
	if _, p, err := EnsureTopics(ctx, cl, "m", TopicOptions{}); err != nil || p != 8 {
		t.Fatalf("reopen after deleting meta: %d, %v", p, err)
	}
	if got := metaRecords(t, c, tp.Meta); len(got) != 1 || got[0] != "partitions=8" {
		t.Errorf("meta records %q; want [partitions=8]", got)
	}
}

// TestTopicsInvalidExisting: existing topics that do not fit the recorded
// P or the required cleanup policy are errors; EnsureTopics alters nothing.
func TestTopicsInvalidExisting(t *testing.T) {
	c := newKafka(t)
	cl := newClient(t, c)
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	tp := TopicNames("v")
	if _, _, err := EnsureTopics(ctx, cl, "v", TopicOptions{Partitions: 8}); err != nil {
		t.Fatal(err)
	}
	replace := func(topic string, parts int32, policy string) {
		t.Helper()
		if _, err := adm.DeleteTopic(ctx, topic); err != nil {
			t.Fatal(err)
		}
		if _, err := adm.CreateTopic(ctx, parts, -1, map[string]*string{"cleanup.policy": kadm.StringPtr(policy)}, topic); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		topic  string
		parts  int32
		policy string
		want   string
	}{
		{tp.In, 4, "delete", `cluster "v": topic shardfn.v.in has 4 partitions, not the cluster's 8 partitions`},
		{tp.Changelog, 16, "compact", `topic shardfn.v.changelog has 16 partitions, not the cluster's 8 partitions`},
		{tp.Changelog, 8, "delete", `topic shardfn.v.changelog has cleanup.policy=delete; it must be compact`},
		{tp.Changelog, 8, "compact,delete", `topic shardfn.v.changelog has cleanup.policy=compact,delete; it must be compact`},
		{tp.In, 8, "compact", `topic shardfn.v.in has cleanup.policy=compact; it must be delete`},
		{tp.Replies, 2, "delete", `topic shardfn.v.replies has 2 partitions, not 1 partition`},
	} {
		replace(c.topic, c.parts, c.policy)
		if _, _, err := EnsureTopics(ctx, cl, "v", TopicOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with %d partitions, %s: %v; want %q", c.topic, c.parts, c.policy, err, c.want)
		}
		// Put it right again for the next case.
		def := TopicOptions{}
		cfg := map[string]*string{}
		parts := int32(8)
		switch c.topic {
		case tp.Changelog:
			cfg = (&ensurer{o: def}).changelogConfigs()
		case tp.In:
			cfg = (&ensurer{o: def}).inConfigs()
		case tp.Replies:
			cfg, parts = (&ensurer{o: def}).repliesConfigs(), 1
		}
		if _, err := adm.DeleteTopic(ctx, c.topic); err != nil {
			t.Fatal(err)
		}
		if _, err := adm.CreateTopic(ctx, parts, -1, cfg, c.topic); err != nil {
			t.Fatal(err)
		}
		if _, p, err := EnsureTopics(ctx, cl, "v", TopicOptions{}); err != nil || p != 8 {
			t.Fatalf("after repairing %s: %d, %v", c.topic, p, err)
		}
	}
}

// TestTopicsClientKinds: the client passed in may be transactional (it
// could not produce to Meta outside a transaction); EnsureTopics reads and
// writes Meta with its own plain client.
func TestTopicsClientKinds(t *testing.T) {
	c := newKafka(t)
	txn := newClient(t, c, kgo.TransactionalID("shardfn-t-node1"))
	if _, p, err := EnsureTopics(testCtx(t), txn, "t", TopicOptions{Partitions: 4}); err != nil || p != 4 {
		t.Fatalf("transactional client: %d, %v", p, err)
	}
	grp := newClient(t, c, kgo.ConsumerGroup("g"), kgo.ConsumeTopics(TopicNames("t").In))
	if _, p, err := EnsureTopics(testCtx(t), grp, "t", TopicOptions{}); err != nil || p != 4 {
		t.Fatalf("group client: %d, %v", p, err)
	}
}
