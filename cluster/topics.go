package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Topics names the Kafka topics of one cluster.
type Topics struct {
	In        string // messages to addresses: P partitions, cleanup.policy=delete
	Changelog string // state ops: P partitions, cleanup.policy=compact
	Replies   string // replies to requests: 1 partition, delete, retention 1h
	Meta      string // cluster metadata and id reservations: 1 partition, cleanup.policy=delete, retention.ms=-1
	Egress    string // egress records of every egress (key = egress name): 1 partition, delete, retention as In
}

// TopicNames returns the topic names of cluster name: "shardfn.<name>.in",
// ".changelog", ".replies" and ".meta". It does not validate name; see
// ValidateName.
func TopicNames(name string) Topics {
	p := "shardfn." + name
	return Topics{In: p + ".in", Changelog: p + ".changelog", Replies: p + ".replies", Meta: p + ".meta", Egress: p + ".egress"}
}

// All returns the topic names in creation order (Meta first).
func (t Topics) All() []string { return []string{t.Meta, t.In, t.Changelog, t.Replies, t.Egress} }

const (
	// DefaultPartitions is P of a cluster created without --partitions.
	DefaultPartitions = 256
	// MaxPartitions is the largest P: the number of key groups, so that a
	// partition is a whole range of key groups.
	MaxPartitions = 4096

	// MetaPartitionsKey is the key of the Meta record that holds P (value:
	// decimal). The first such record in Meta is the cluster's P; later ones
	// (lost races) are ignored. On-topic format; never change.
	MetaPartitionsKey = "partitions"

	// DefaultInRetention is retention.ms of In when TopicOptions.InRetention is 0.
	DefaultInRetention = 7 * 24 * time.Hour
	// RepliesRetention is retention.ms of Replies.
	RepliesRetention = time.Hour

	maxTopicLen = 249 // Kafka's limit on a topic name
)

// TopicOptions set how topics are created. They matter only for topics that
// EnsureTopics creates; existing topics are validated, never altered.
type TopicOptions struct {
	// Partitions is P: a power of two from 1 to 4096. 0 = use the count the
	// cluster was created with, or DefaultPartitions (256) for a new cluster.
	Partitions int32
	// ReplicationFactor of created topics; 0 (or -1) = the broker's default
	// (default.replication.factor).
	ReplicationFactor int16
	// MinInsyncReplicas: 0 = broker default; else sets min.insync.replicas
	// on all four topics (Meta too: its first record decides P).
	MinInsyncReplicas int
	// InRetention is retention.ms of In; 0 = DefaultInRetention (7 days).
	// It should exceed the longest time a partition may go unconsumed.
	InRetention time.Duration
	// Logger receives one line per topic created and per record written;
	// nil = none.
	Logger *slog.Logger
}

// ValidateName checks a cluster name: non-empty, Kafka's topic characters
// [a-zA-Z0-9._-] only, and short enough that its longest topic name
// ("shardfn.<name>.changelog") stays within Kafka's 249 characters.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("cluster name is empty: pass --cluster-name with letters, digits, '.', '_' or '-'")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("cluster name %q has %q at byte %d: Kafka topic names allow only letters, digits, '.', '_' and '-'", name, c, i)
		}
	}
	if n := len(TopicNames(name).Changelog); n > maxTopicLen {
		return fmt.Errorf("cluster name %q is %d characters: its topic %q would be %d characters, past Kafka's limit of %d; use at most %d characters",
			name, len(name), TopicNames(name).Changelog[:40]+"...", n, maxTopicLen, len(name)-(n-maxTopicLen))
	}
	return nil
}

// ValidPartitions reports whether p is a valid P: a power of two from 1 to
// MaxPartitions.
func ValidPartitions(p int32) bool { return p >= 1 && p <= MaxPartitions && p&(p-1) == 0 }

func (o *TopicOptions) validate() error {
	if o.Partitions != 0 && !ValidPartitions(o.Partitions) {
		return fmt.Errorf("--partitions %d: pass a power of two from 1 to %d (e.g. %d), or 0 to use the count the cluster was created with",
			o.Partitions, MaxPartitions, DefaultPartitions)
	}
	if o.ReplicationFactor < -1 {
		return fmt.Errorf("--replication-factor %d: pass a positive count, or 0 for the broker's default", o.ReplicationFactor)
	}
	if o.MinInsyncReplicas < 0 {
		return fmt.Errorf("--min-insync-replicas %d: pass a positive count, or 0 for the broker's default", o.MinInsyncReplicas)
	}
	if o.ReplicationFactor > 0 && o.MinInsyncReplicas > int(o.ReplicationFactor) {
		return fmt.Errorf("--min-insync-replicas %d exceeds --replication-factor %d: no write could ever succeed; pass at most %d",
			o.MinInsyncReplicas, o.ReplicationFactor, o.ReplicationFactor)
	}
	if o.InRetention < 0 || o.InRetention > 0 && o.InRetention < time.Millisecond {
		return fmt.Errorf("in-topic retention %v: pass at least 1ms, or 0 for %v", o.InRetention, DefaultInRetention)
	}
	return nil
}

// testHookBeforeRecord, when set (tests only), runs after EnsureTopics has
// found no partitions record in Meta and before it writes its own: the
// window in which another node may record a different P.
var testHookBeforeRecord func()

// EnsureTopics creates the cluster's topics where missing and validates
// existing ones, returning their names and P.
//
// cl is used for admin requests (through kadm) and may be any client,
// transactional or a group member; the Meta topic is read and written by a
// short-lived plain client that EnsureTopics makes from cl's seed brokers,
// dialer, TLS, SASL and client id. ctx bounds the whole call (on a broker
// that keeps answering with retriable errors it runs until ctx ends).
//
// P is decided once, when the cluster is created, by the first record with
// key "partitions" in Meta: a node that finds none writes its own (o's P, or
// the partition count of an existing In or Changelog, or 256) and then reads
// Meta again; whatever record comes first wins, so nodes racing to create a
// cluster agree. In and Changelog are created only after P is known, so they
// get it too. A node whose explicit o.Partitions differs from the recorded P
// fails; with o.Partitions 0 it adopts P. An In or Changelog whose partition
// count differs from P, a Changelog that is not compact-only, an In or Meta
// that is compacted, or a Meta or Replies with other than one partition is
// an error; existing topics are never altered. Topics missing from an
// existing cluster are created (and logged as a warning for In and
// Changelog: their data is gone).
//
// Safe to call from several processes at once (TOPIC_ALREADY_EXISTS is
// expected). Errors say what was being done.
func EnsureTopics(ctx context.Context, cl *kgo.Client, name string, o TopicOptions) (Topics, int32, error) {
	if err := ValidateName(name); err != nil {
		return Topics{}, 0, err
	}
	if err := o.validate(); err != nil {
		return Topics{}, 0, err
	}
	t := TopicNames(name)
	e := &ensurer{adm: kadm.NewClient(cl), cl: cl, name: name, t: t, o: o, log: o.Logger}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e.log = e.log.With("cluster", name)
	p, err := e.run(ctx)
	if err != nil {
		return Topics{}, 0, err
	}
	return t, p, nil
}

type ensurer struct {
	adm  *kadm.Client
	cl   *kgo.Client
	name string
	t    Topics
	o    TopicOptions
	log  *slog.Logger
}

func (e *ensurer) run(ctx context.Context) (int32, error) {
	// 1. Meta first: it decides P.
	details, err := e.list(ctx)
	if err != nil {
		return 0, err
	}
	if _, ok := details[e.t.Meta]; !ok {
		if err := e.create(ctx, e.t.Meta, 1, e.metaConfigs()); err != nil {
			return 0, err
		}
	}

	// 2. The recorded P, or record one.
	mc, err := e.metaClient()
	if err != nil {
		return 0, err
	}
	defer mc.Close()
	p, _, found, err := e.readRecorded(ctx, mc)
	if err != nil {
		return 0, err
	}
	existing := found
	if !found {
		var off int64
		want, err := e.proposal(details)
		if err != nil {
			return 0, err
		}
		if testHookBeforeRecord != nil {
			testHookBeforeRecord()
		}
		rec := &kgo.Record{Topic: e.t.Meta, Key: []byte(MetaPartitionsKey), Value: []byte(strconv.Itoa(int(want)))}
		if err := mc.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return 0, fmt.Errorf("cluster %q: write the partition count %d to %s: %w", e.name, want, e.t.Meta, err)
		}
		// Read on from where the first read stopped: the first partitions
		// record is at or before ours.
		if p, off, found, err = e.readUntil(ctx, mc, rec.Offset); err != nil {
			return 0, err
		}
		if !found {
			return 0, fmt.Errorf("cluster %q: wrote the partition count to %s at offset %d but read no partitions record back up to it",
				e.name, e.t.Meta, rec.Offset)
		}
		if off != rec.Offset && p != want && e.o.Partitions != 0 {
			return 0, fmt.Errorf("cluster %q was created with %d partitions by another node at the same time (record at %s offset %d); --partitions %d does not match (omit --partitions to use %d)",
				e.name, p, e.t.Meta, off, e.o.Partitions, p)
		}
		if off == rec.Offset {
			e.log.Info("recorded the cluster's partition count", "partitions", p, "topic", e.t.Meta, "offset", off)
		} else {
			e.log.Info("another node recorded the cluster's partition count first", "partitions", p, "topic", e.t.Meta, "offset", off)
		}
	}
	if e.o.Partitions != 0 && e.o.Partitions != p {
		return 0, fmt.Errorf("cluster %q was created with %d partitions; --partitions %d does not match (omit --partitions to use %d)",
			e.name, p, e.o.Partitions, p)
	}

	// 3. The others, now that P is known.
	for _, c := range []struct {
		topic string
		parts int32
		cfg   map[string]*string
	}{{e.t.In, p, e.inConfigs()}, {e.t.Changelog, p, e.changelogConfigs()}, {e.t.Replies, 1, e.repliesConfigs()}, {e.t.Egress, 1, e.inConfigs()}} {
		if _, ok := details[c.topic]; ok {
			continue
		}
		if existing && c.topic != e.t.Replies && c.topic != e.t.Egress {
			e.log.Warn("topic of an existing cluster is missing; creating it empty (its records are lost)", "topic", c.topic, "partitions", c.parts)
		}
		if err := e.create(ctx, c.topic, c.parts, c.cfg); err != nil {
			return 0, err
		}
	}

	// 4. Validate what is there now.
	return p, e.validate(ctx, p)
}

// list returns the partition counts of those of the cluster's topics that
// exist. It asks a broker directly: kadm's ListTopics answers from a
// metadata cache up to 5s old, which misses a topic just created or deleted.
func (e *ensurer) list(ctx context.Context) (map[string]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range e.t.All() {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, e.cl)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: describe topics: %w", e.name, err)
	}
	out := make(map[string]int32, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case err == nil:
			out[*t.Topic] = int32(len(t.Partitions))
		case errors.Is(err, kerr.UnknownTopicOrPartition):
		case errors.Is(err, kerr.LeaderNotAvailable): // just created
			out[*t.Topic] = 0
		default:
			return nil, fmt.Errorf("cluster %q: describe topic %s: %w", e.name, *t.Topic, err)
		}
	}
	return out, nil
}

// create creates one topic; one that already exists (another node won the
// race) is fine.
func (e *ensurer) create(ctx context.Context, topic string, parts int32, cfg map[string]*string) error {
	rf := e.o.ReplicationFactor
	if rf == 0 {
		rf = -1
	}
	resp, err := e.adm.CreateTopic(ctx, parts, rf, cfg, topic)
	switch {
	case err == nil:
		e.log.Info("created topic", "topic", topic, "partitions", resp.NumPartitions, "replication_factor", resp.ReplicationFactor)
		return nil
	case errors.Is(err, kerr.TopicAlreadyExists):
		return nil
	}
	msg := ""
	if resp.ErrMessage != "" {
		msg = " (" + resp.ErrMessage + ")"
	}
	hint := ""
	if errors.Is(err, kerr.InvalidReplicationFactor) {
		hint = "; pass a --replication-factor no larger than the number of brokers, or 0 for the broker's default"
	}
	return fmt.Errorf("cluster %q: create topic %s with %d partitions: %w%s%s", e.name, topic, parts, err, msg, hint)
}

// proposal is the P this node records when Meta holds none: o.Partitions, or
// the partition count of an existing In or Changelog (a cluster whose Meta
// was lost or that an operator created by hand), or DefaultPartitions.
func (e *ensurer) proposal(details map[string]int32) (int32, error) {
	var have int32
	var from string
	for _, topic := range []string{e.t.In, e.t.Changelog} {
		n, ok := details[topic]
		if !ok || n == 0 {
			continue
		}
		if have != 0 && n != have {
			return 0, fmt.Errorf("cluster %q: %s has %d partitions but %s has %d; they must match (delete one, or both for a new cluster)",
				e.name, from, have, topic, n)
		}
		if have == 0 {
			have, from = n, topic
		}
	}
	switch {
	case have != 0 && e.o.Partitions != 0 && e.o.Partitions != have:
		return 0, fmt.Errorf("cluster %q: topic %s exists with %d partitions; --partitions %d does not match (omit --partitions to use %d)",
			e.name, from, have, e.o.Partitions, have)
	case have != 0 && !ValidPartitions(have):
		return 0, fmt.Errorf("cluster %q: topic %s exists with %d partitions, not a power of two from 1 to %d; delete it or use another --cluster-name",
			e.name, from, have, MaxPartitions)
	case have != 0:
		return have, nil
	case e.o.Partitions != 0:
		return e.o.Partitions, nil
	}
	return DefaultPartitions, nil
}

// metaClient makes a plain client for Meta (cl may be transactional or a
// group member, which could neither produce outside a transaction nor
// consume a partition directly) with cl's connection settings.
func (e *ensurer) metaClient() (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{e.t.Meta: {0: kgo.NewOffset().AtStart()}}),
		kgo.KeepControlRecords(), // so the last offset is seen even when it is a commit marker
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.FetchMaxWait(time.Second),
	}
	if v, ok := e.cl.OptValue(kgo.SeedBrokers).([]string); ok && len(v) > 0 {
		opts = append(opts, kgo.SeedBrokers(v...))
	}
	if v, ok := e.cl.OptValue(kgo.Dialer).(func(context.Context, string, string) (net.Conn, error)); ok && v != nil {
		opts = append(opts, kgo.Dialer(v))
	}
	if v, ok := e.cl.OptValue(kgo.DialTLSConfig).(*tls.Config); ok && v != nil {
		opts = append(opts, kgo.DialTLSConfig(v))
	}
	if v, ok := e.cl.OptValue(kgo.SASL).([]sasl.Mechanism); ok && len(v) > 0 {
		opts = append(opts, kgo.SASL(v...))
	}
	if v, ok := e.cl.OptValue(kgo.ClientID).(string); ok && v != "" {
		opts = append(opts, kgo.ClientID(v))
	}
	mc, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: client for %s: %w", e.name, e.t.Meta, err)
	}
	return mc, nil
}

// readRecorded reads Meta from its start up to its current end offset and
// returns the first partitions record's P and offset. The end offset is
// asked through mc, made after Meta was created: the caller's client may
// hold cached metadata from before, without Meta, for up to 5s.
func (e *ensurer) readRecorded(ctx context.Context, mc *kgo.Client) (p int32, off int64, found bool, err error) {
	var end kadm.ListedOffset
	err = retryKafka(ctx, func() error {
		ends, err := kadm.NewClient(mc).ListEndOffsets(ctx, e.t.Meta)
		if err != nil {
			return err
		}
		var ok bool
		if end, ok = ends.Lookup(e.t.Meta, 0); !ok {
			return kerr.UnknownTopicOrPartition // metadata not yet propagated after creation
		}
		return end.Err
	})
	if err != nil {
		return 0, 0, false, fmt.Errorf("cluster %q: list the end offset of %s: %w", e.name, e.t.Meta, err)
	}
	if end.Offset == 0 {
		return 0, 0, false, nil
	}
	return e.readUntil(ctx, mc, end.Offset-1)
}

// readUntil polls mc until it finds the first partitions record or has
// passed offset last of Meta. A record with key partitions in a transaction
// does not count (shardfn writes it outside of one).
func (e *ensurer) readUntil(ctx context.Context, mc *kgo.Client, last int64) (p int32, off int64, found bool, err error) {
	var lastErr error
	for {
		fs := mc.PollFetches(ctx)
		if ctx.Err() != nil {
			if lastErr != nil {
				return 0, 0, false, fmt.Errorf("cluster %q: read %s: %w (last fetch error: %v)", e.name, e.t.Meta, ctx.Err(), lastErr)
			}
			return 0, 0, false, fmt.Errorf("cluster %q: read %s: %w", e.name, e.t.Meta, ctx.Err())
		}
		for _, fe := range fs.Errors() {
			var ke *kerr.Error
			if !errors.As(fe.Err, &ke) { // untyped: not retriable
				return 0, 0, false, fmt.Errorf("cluster %q: read %s: %w", e.name, e.t.Meta, fe.Err)
			}
			lastErr = fe.Err
		}
		// The whole fetch is looked at: the client's position is past all
		// of it, so a record left unread here would never be seen again.
		passed := false
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if !r.Attrs.IsControl() && !r.Attrs.IsTransactional() && string(r.Key) == MetaPartitionsKey {
				n, err := strconv.ParseInt(string(r.Value), 10, 32)
				if err != nil || !ValidPartitions(int32(n)) {
					return 0, 0, false, fmt.Errorf("cluster %q: %s holds partitions record %q at offset %d, not a power of two from 1 to %d: the topic was written by something other than shardfn; use another --cluster-name",
						e.name, e.t.Meta, r.Value, r.Offset, MaxPartitions)
				}
				return int32(n), r.Offset, true, nil
			}
			passed = passed || r.Offset >= last
		}
		if passed {
			return 0, 0, false, nil
		}
	}
}

func (e *ensurer) withISR(m map[string]*string) map[string]*string {
	if e.o.MinInsyncReplicas > 0 {
		m["min.insync.replicas"] = kadm.StringPtr(strconv.Itoa(e.o.MinInsyncReplicas))
	}
	return m
}

func ms(d time.Duration) *string { return kadm.StringPtr(strconv.FormatInt(d.Milliseconds(), 10)) }

func (e *ensurer) metaConfigs() map[string]*string {
	return e.withISR(map[string]*string{
		"cleanup.policy":  kadm.StringPtr("delete"),
		"retention.ms":    kadm.StringPtr("-1"),
		"retention.bytes": kadm.StringPtr("-1"),
	})
}

func (e *ensurer) inConfigs() map[string]*string {
	r := e.o.InRetention
	if r == 0 {
		r = DefaultInRetention
	}
	return e.withISR(map[string]*string{"cleanup.policy": kadm.StringPtr("delete"), "retention.ms": ms(r)})
}

func (e *ensurer) changelogConfigs() map[string]*string {
	return e.withISR(map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
}

func (e *ensurer) repliesConfigs() map[string]*string {
	return e.withISR(map[string]*string{"cleanup.policy": kadm.StringPtr("delete"), "retention.ms": ms(RepliesRetention)})
}

// validate checks the partition counts and cleanup policies of the four
// topics. Metadata may lag a creation on a real cluster, so a topic that is
// missing or has no partitions yet is looked up again for a few seconds.
func (e *ensurer) validate(ctx context.Context, p int32) error {
	want := map[string]int32{e.t.In: p, e.t.Changelog: p, e.t.Replies: 1, e.t.Meta: 1, e.t.Egress: 1}
	var details map[string]int32
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		var err error
		if details, err = e.list(ctx); err != nil {
			return err
		}
		settled := true
		for topic := range want {
			if details[topic] == 0 {
				settled = false
			}
		}
		if settled {
			break
		}
		if wait > 5*time.Second {
			for _, topic := range e.t.All() {
				if _, ok := details[topic]; !ok {
					return fmt.Errorf("cluster %q: topic %s is still missing after it was created", e.name, topic)
				}
			}
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %q: wait for the topics to appear: %w", e.name, ctx.Err())
		case <-time.After(wait):
		}
	}
	for _, topic := range e.t.All() {
		if n := details[topic]; n != want[topic] {
			what := fmt.Sprintf("the cluster's %d partitions", p)
			if want[topic] == 1 {
				what = "1 partition"
			}
			return fmt.Errorf("cluster %q: topic %s has %d partitions, not %s; delete it (losing its records) or use another --cluster-name",
				e.name, topic, n, what)
		}
	}

	cfgs, err := e.adm.DescribeTopicConfigs(ctx, e.t.In, e.t.Changelog, e.t.Meta)
	if err != nil {
		return fmt.Errorf("cluster %q: describe topic configs: %w", e.name, err)
	}
	for _, c := range []struct {
		topic, want string
		ok          func(compact, del bool) bool
	}{
		{e.t.Changelog, "compact (without delete: state must outlive any retention)", func(c, d bool) bool { return c && !d }},
		{e.t.In, "delete (a compacted in topic would drop messages)", func(c, d bool) bool { return !c }},
		{e.t.Meta, "delete (compaction would keep the last partitions record, not the first)", func(c, d bool) bool { return !c }},
	} {
		rc, err := cfgs.On(c.topic, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return fmt.Errorf("cluster %q: describe the configs of topic %s: %w", e.name, c.topic, err)
		}
		policy := "delete" // Kafka's default when the config is not listed
		for _, kv := range rc.Configs {
			if kv.Key == "cleanup.policy" {
				policy = kv.MaybeValue()
			}
		}
		var compact, del bool
		for _, v := range strings.Split(policy, ",") {
			switch strings.TrimSpace(v) {
			case "compact":
				compact = true
			case "delete":
				del = true
			}
		}
		if !c.ok(compact, del) {
			return fmt.Errorf("cluster %q: topic %s has cleanup.policy=%s; it must be %s. Set it with kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=%s",
				e.name, c.topic, policy, c.want, c.topic, strings.Fields(c.want)[0])
		}
	}
	return nil
}

// retryKafka runs f until it returns nil or an error that is not a
// retriable Kafka error, for at most about ten seconds (a topic just
// created may be unknown to some brokers for a moment).
func retryKafka(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := f()
		if err == nil || !kerr.IsRetriable(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}
