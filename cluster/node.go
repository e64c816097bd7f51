package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
)

// Config configures one node.
type Config struct {
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Name is the cluster's name: its topics and consumer group derive
	// from it (TopicNames).
	Name string
	// Node names this node: its static group member id and the suffix of
	// its transactional id. A restarted node must keep its name.
	Node string
	// Topics set how the cluster's topics are created.
	Topics TopicOptions
	// CommitInterval is the longest an epoch waits for input before it
	// commits. Default 50ms.
	CommitInterval time.Duration
	// SessionTimeout is the group session timeout. Default 6s.
	SessionTimeout time.Duration
	// TxnTimeout is the transaction timeout: how long a dead node's open
	// transaction can hold readers. Default 10s.
	TxnTimeout time.Duration
	// MaxPollRecords bounds the input records of one epoch. Default 2000.
	MaxPollRecords int
	// Engine is the template of the node's engines (DataDir required;
	// Cluster is set by the node).
	Engine engine.Options
	// Specs are the function types.
	Specs []engine.FunctionSpec
	// Logger; default slog.Default().
	Logger *slog.Logger
	// ClientOpts are added to every Kafka client the node makes (tests).
	ClientOpts []kgo.Opt
	// AdminURL is the base URL of this node's admin listener as the other
	// nodes reach it (http://10.0.0.5:9090): they forward GET /state/...
	// for this node's partitions there (forward.go). Empty: they cannot.
	AdminURL string
}

func (c *Config) defaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("cluster: no brokers (--brokers host:port,...)")
	}
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("cluster: no node name and no host name: %w", err)
		}
		c.Node = h
	}
	if c.Engine.DataDir == "" {
		return errors.New("cluster: a node needs a data directory")
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 50 * time.Millisecond
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 6 * time.Second
	}
	if c.TxnTimeout <= 0 {
		c.TxnTimeout = 10 * time.Second
	}
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 2000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Node is one member of a cluster: it owns the partitions the group gives
// it, runs their functions in an engine over Kafka transactions, and takes
// ingress for any address (produced to the owner's input partition).
type Node struct {
	cfg    Config
	log    *slog.Logger
	topics Topics
	parts  int32

	prod *kgo.Client // ingress and replies: idempotent, not transactional
	adm  *kadm.Client
	sess *kgo.GroupTransactSession
	rep  *kgo.Client // reads the replies topic

	owned   atomic.Pointer[[]bool] // the group's assignment, by partition
	changed atomic.Bool            // the assignment changed since the engine opened
	adopted atomic.Pointer[[]bool] // the partitions the current engine was opened with (read by HTTP goroutines)
	eng     atomic.Pointer[engine.Engine]
	wake    chan struct{}

	reqMu    sync.Mutex
	requests map[uint64]chan engine.Message

	stats Stats
	fwd   forwarder // state reads forwarded to the owner (forward.go)

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	err    atomic.Pointer[error]
	ready  atomic.Bool
}

// Stats are a node's counters.
type Stats struct {
	Commits, Aborts, Rebalances, Restarts atomic.Uint64
	Restored                              atomic.Uint64 // changelog records restored
	RestoreNanos                          atomic.Int64  // time spent restoring
	LastPauseNanos, MaxPauseNanos         atomic.Int64  // engine restarts
	CommitNanos                           atomic.Int64  // last commit's duration
	InputLag                              atomic.Int64  // sampled input lag of the owned partitions
}

// Start makes the node: creates or validates the topics, joins the group
// and starts consuming. It returns once the node runs; Ready tells when it
// owns its partitions.
func Start(cfg Config) (*Node, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Node), wake: make(chan struct{}, 1),
		requests: map[uint64]chan engine.Message{}, done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	base := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOpts...)
	var err error
	n.prod, err = kgo.NewClient(append(base, kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return nil, fmt.Errorf("cluster: kafka client: %w", err)
	}
	n.adm = kadm.NewClient(n.prod)
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	n.topics, n.parts, err = EnsureTopics(ctx, n.prod, cfg.Name, cfg.Topics)
	if err != nil {
		n.prod.Close()
		return nil, err
	}
	if err := n.advertise(ctx); err != nil { // forward.go
		n.prod.Close()
		return nil, err
	}
	none := make([]bool, n.parts)
	n.owned.Store(&none)
	n.adopted.Store(&none)
	ends, err := n.adm.ListEndOffsets(ctx, n.topics.Replies)
	if err != nil {
		n.prod.Close()
		return nil, fmt.Errorf("cluster: replies topic: %w", err)
	}
	repEnd := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { repEnd[o.Partition] = kgo.NewOffset().At(o.Offset) })
	n.rep, err = kgo.NewClient(append(base, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.topics.Replies: repEnd}))...)
	if err != nil {
		n.prod.Close()
		return nil, fmt.Errorf("cluster: replies client: %w", err)
	}
	n.sess, err = kgo.NewGroupTransactSession(append(base,
		kgo.TransactionalID("shardfn-"+cfg.Name+"-"+cfg.Node),
		kgo.TransactionTimeout(cfg.TxnTimeout),
		kgo.ConsumerGroup("shardfn-"+cfg.Name),
		kgo.ConsumeTopics(n.topics.In),
		kgo.InstanceID(cfg.Node),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.SessionTimeout*2),
		kgo.HeartbeatInterval(cfg.SessionTimeout/6),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(cfg.CommitInterval),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], false) }),
	)...)
	if err != nil {
		n.rep.Close()
		n.prod.Close()
		return nil, fmt.Errorf("cluster: group session: %w", err)
	}
	if err := n.fencePredecessor(); err != nil {
		n.sess.Close()
		n.rep.Close()
		n.prod.Close()
		return nil, err
	}
	go n.readReplies()
	go n.sampleLag()
	go n.run()
	return n, nil
}

// assign records an assignment change (a group callback: it must not
// block on the node's loop, which may be ending a transaction).
func (n *Node) assign(ps []int32, add bool) {
	old := *n.owned.Load()
	next := make([]bool, len(old))
	copy(next, old)
	for _, p := range ps {
		if p >= 0 && int(p) < len(next) {
			next[p] = add
		}
	}
	n.owned.Store(&next)
	n.changed.Store(true)
	n.stats.Rebalances.Add(1)
	n.log.Info("assignment changed", "added", add, "partitions", fmt.Sprint(ps), "owned", count(next))
}

func count(b []bool) int {
	c := 0
	for _, x := range b {
		if x {
			c++
		}
	}
	return c
}

// Owned returns the partitions this node's engine serves now.
func (n *Node) Owned() []int32 {
	var out []int32
	for p, ok := range *n.adopted.Load() {
		if ok {
			out = append(out, int32(p))
		}
	}
	return out
}

// Partitions is P.
func (n *Node) Partitions() int32 { return n.parts }

// Topics names the cluster's topics.
func (n *Node) Topics() Topics { return n.topics }

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// Ready reports whether the node runs an engine over its partitions.
func (n *Node) Ready() bool { return n.ready.Load() && n.Err() == nil }

// Err is why the node stopped, if it did.
func (n *Node) Err() error {
	if p := n.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (n *Node) fail(err error) {
	if n.err.CompareAndSwap(nil, &err) {
		n.log.Error("cluster node stopped", "err", err)
	}
}

// Close stops the node as a restart would: the open transaction is
// abandoned (aborted by the broker, or fenced when the node comes back),
// and the node stays in the group (static membership) so that, back
// within the session timeout, it keeps its partitions and restores only
// the changelog it missed. Leave takes a node out for good.
func (n *Node) Close() error {
	n.cancel()
	<-n.done
	n.sess.Close()
	n.rep.Close()
	n.prod.Close()
	return nil
}

// Leave takes the node out of the cluster: it stops and removes itself
// from the group, so its partitions move to the other nodes at once.
func (n *Node) Leave() error {
	n.cancel()
	<-n.done
	n.sess.Close()
	n.rep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	group := "shardfn-" + n.cfg.Name
	resp, err := n.adm.LeaveGroup(ctx, kadm.LeaveGroup(group).InstanceIDs(n.cfg.Node).Reason("node leaves the cluster"))
	if err == nil {
		err = resp.Error()
	}
	n.prod.Close()
	if err != nil {
		return fmt.Errorf("cluster: leave group %s: %w", group, err)
	}
	return nil
}

// run is the node's loop: one transaction per epoch.
func (n *Node) run() {
	defer close(n.done)
	defer func() {
		if e := n.eng.Load(); e != nil {
			e.Abort(errors.New("node closing"))
			_ = e.Close()
		}
	}()
	var ep *engine.Epoch
	for n.ctx.Err() == nil {
		if n.eng.Load() == nil || n.changed.Load() {
			ep = &engine.Epoch{} // its recording batches belong to one engine's store
			if err := n.reopen(); err != nil {
				if n.ctx.Err() != nil {
					return
				}
				n.log.Error("cannot open the engine; retrying", "err", err)
				time.Sleep(time.Second)
				continue
			}
		}
		pctx, cancel := context.WithTimeout(n.ctx, n.cfg.CommitInterval)
		fs := n.sess.PollRecords(pctx, n.cfg.MaxPollRecords)
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		var recs []*kgo.Record
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				n.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if n.changed.Load() {
			// Records polled before the assignment changed are consumed
			// again from the committed offsets after the reopen: abort.
			_ = n.sess.Begin()
			_, _ = n.sess.End(n.ctx, kgo.TryAbort)
			continue
		}
		if err := n.epoch(ep, recs); err != nil && n.ctx.Err() == nil {
			n.log.Info("epoch aborted; reopening the engine", "err", err)
			n.stats.Aborts.Add(1)
			if e := n.eng.Swap(nil); e != nil {
				e.Abort(err)
				_ = e.Close()
			}
		}
	}
}

// epoch runs one transaction: deliver recs, wait for them to be consumed,
// ship what the engine appended, commit, then apply.
func (n *Node) epoch(ep *engine.Epoch, recs []*kgo.Record) error {
	e := n.eng.Load()
	ep.Reset() // an aborted epoch leaves its effects in ep
	if err := n.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.TxnTimeout/2)
	defer cancel()
	ship := &shipper{n: n, positions: map[int32]int64{}}
	pending := make(map[uint64]struct{}, len(recs))
	i := 0
	for {
		for i < len(recs) {
			m, err := format.DecodeStoredMessage(recs[i].Value)
			if err != nil {
				// A record no node can read: skipped (its offset commits),
				// reported. Only a foreign producer writes such records.
				n.log.Error("input record is not a message; skipped", "partition", recs[i].Partition, "offset", recs[i].Offset, "err", err)
				i++
				continue
			}
			if err := e.Deliver(m); err != nil {
				if errors.Is(err, engine.ErrOverloaded) {
					break
				}
				return n.endAbort(fmt.Errorf("deliver: %w", err))
			}
			pending[m.Env.ID] = struct{}{}
			i++
		}
		if err := e.CollectEpoch(ep); err != nil {
			return n.endAbort(err)
		}
		for _, id := range ep.Consumed[ship.consumed:] {
			delete(pending, id)
		}
		ship.consumed = len(ep.Consumed)
		ship.produce(ep)
		if i == len(recs) && len(pending) == 0 {
			break
		}
		select {
		case <-n.wake:
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return n.endAbort(fmt.Errorf("%d input messages not consumed within %v", len(pending), n.cfg.TxnTimeout/2))
		}
		if err := e.Err(); err != nil {
			return n.endAbort(err)
		}
	}
	if ep.Records == 0 && len(recs) == 0 {
		_, err := n.sess.End(n.ctx, kgo.TryAbort) // nothing to commit
		return err
	}
	start := time.Now()
	if err := n.sess.Client().Flush(n.ctx); err != nil {
		return n.endAbort(fmt.Errorf("flush: %w", err))
	}
	if err := ship.err(); err != nil {
		return n.endAbort(err)
	}
	committed, err := n.sess.End(n.ctx, kgo.TryCommit)
	if err != nil || !committed {
		return fmt.Errorf("transaction not committed: %v", err)
	}
	if n.log.Enabled(n.ctx, slog.LevelDebug) {
		lo, hi := map[int32]int64{}, map[int32]int64{}
		for _, r := range recs {
			if _, ok := lo[r.Partition]; !ok {
				lo[r.Partition] = r.Offset
			}
			hi[r.Partition] = r.Offset
		}
		n.log.Debug("epoch committed", "first", fmt.Sprint(lo), "last", fmt.Sprint(hi), "changelog", fmt.Sprint(ship.positions))
	}
	n.stats.Commits.Add(1)
	n.stats.CommitNanos.Store(int64(time.Since(start)))
	if err := e.CommitEpoch(ep, ship.positions); err != nil {
		return err
	}
	ship.reset(ep)
	return nil
}

func (n *Node) endAbort(cause error) error {
	_, _ = n.sess.End(n.ctx, kgo.TryAbort)
	return cause
}

// shipper produces an epoch's records into the open transaction.
type shipper struct {
	n                            *Node
	consumed, changes, sends, eg int
	mu                           sync.Mutex
	positions                    map[int32]int64 // changelog partition -> next offset
	firstErr                     error
}

// Changelog record: key = class byte + store key ('k' point operations,
// 'r' a range deletion, keyed by its start so that compaction keeps the
// last of each); value = nil (a deletion: a tombstone), 's' + value (a
// set), or 'r' + end key (a range deletion).
func changeRecord(topic string, ch *engine.Change) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: ch.Partition}
	switch ch.Kind {
	case store.ChangeSet:
		r.Key = append([]byte{'k'}, ch.Key...)
		r.Value = append([]byte{'s'}, ch.Value...)
	case store.ChangeDelete:
		r.Key = append([]byte{'k'}, ch.Key...)
	case store.ChangeDeleteRange:
		r.Key = append([]byte{'r'}, ch.Key...)
		r.Value = append([]byte{'r'}, ch.Value...)
	}
	return r
}

// decodeChange is changeRecord's inverse.
func decodeChange(r *kgo.Record) (store.ChangeKind, []byte, []byte, error) {
	if len(r.Key) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: changelog record without a key at %s/%d@%d", store.ErrCorrupt, r.Topic, r.Partition, r.Offset)
	}
	switch {
	case r.Key[0] == 'k' && r.Value == nil:
		return store.ChangeDelete, r.Key[1:], nil, nil
	case r.Key[0] == 'k' && len(r.Value) > 0 && r.Value[0] == 's':
		return store.ChangeSet, r.Key[1:], r.Value[1:], nil
	case r.Key[0] == 'r' && len(r.Value) > 0 && r.Value[0] == 'r':
		return store.ChangeDeleteRange, r.Key[1:], r.Value[1:], nil
	}
	return 0, nil, nil, fmt.Errorf("%w: changelog record of unknown shape at %s/%d@%d", store.ErrCorrupt, r.Topic, r.Partition, r.Offset)
}

func (s *shipper) produce(ep *engine.Epoch) {
	n := s.n
	t := n.topics
	for ; s.changes < len(ep.Changes); s.changes++ {
		n.sess.Produce(n.ctx, changeRecord(t.Changelog, &ep.Changes[s.changes]), s.changelogDone)
	}
	for ; s.sends < len(ep.Sends); s.sends++ {
		m := &ep.Sends[s.sends]
		n.sess.Produce(n.ctx, &kgo.Record{Topic: t.In, Partition: m.Partition, Value: append([]byte(nil), m.Msg...)}, s.done)
	}
	for ; s.eg < len(ep.Egress); s.eg++ {
		g := &ep.Egress[s.eg]
		n.sess.Produce(n.ctx, &kgo.Record{Topic: t.Egress, Key: []byte(g.Name), Value: encodeEgress(g),
			Headers: []kgo.RecordHeader{{Key: "egress", Value: []byte(g.Name)}}}, s.done)
	}
}

func (s *shipper) changelogDone(r *kgo.Record, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.firstErr == nil {
			s.firstErr = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
		}
		return
	}
	if r.Offset+1 > s.positions[r.Partition] {
		s.positions[r.Partition] = r.Offset + 1
	}
}

func (s *shipper) done(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstErr == nil {
		s.firstErr = fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
	}
}

func (s *shipper) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

// reset readies s and ep for the next epoch.
func (s *shipper) reset(ep *engine.Epoch) {
	ep.Reset()
	s.consumed, s.changes, s.sends, s.eg = 0, 0, 0, 0
	clear(s.positions)
}

// encodeEgress is an egress record's value: source address, type, payload.
func encodeEgress(g *engine.ClusterEgress) []byte {
	b := format.AppendAddress(nil, g.Source)
	b = binary.AppendUvarint(b, uint64(len(g.Type)))
	b = append(b, g.Type...)
	return append(b, g.Payload...)
}

// reopen (re)starts the engine over the partitions the group assigned:
// close the old one (nothing uncommitted is in the store), restore the
// changelog of every partition newly owned, open a new engine.
func (n *Node) reopen() error {
	start := time.Now()
	n.ready.Store(false)
	if e := n.eng.Swap(nil); e != nil {
		// What it appended since the last commit is discarded: delayed
		// messages fire again from the store, input is read again from
		// the committed offsets.
		e.Abort(errors.New("the node's partitions changed"))
		_ = e.Close()
	}
	n.changed.Store(false)
	owned := *n.owned.Load()
	dir := n.cfg.Engine.DataDir
	if err := n.restore(filepath.Join(dir, "store"), owned); err != nil {
		n.changed.Store(true)
		return err
	}
	opts := n.cfg.Engine
	if opts.Logger == nil {
		opts.Logger = n.log
	}
	opts.Cluster = &engine.ClusterLink{
		Partition:  func(kg uint16) int32 { return PartitionOf(kg, n.parts) },
		Owns:       func(p int32) bool { return int(p) < len(owned) && owned[p] },
		ReserveIDs: n.reserveIDs,
		Reply:      n.sendReply,
		Appended: func(uint64) {
			select {
			case n.wake <- struct{}{}:
			default:
			}
		},
	}
	e, err := engine.Open(opts, n.cfg.Specs...)
	if err != nil {
		n.changed.Store(true)
		return fmt.Errorf("cluster: open engine: %w", err)
	}
	n.adopted.Store(&owned)
	n.eng.Store(e)
	n.ready.Store(true)
	n.stats.Restarts.Add(1)
	d := time.Since(start)
	n.stats.LastPauseNanos.Store(int64(d))
	if int64(d) > n.stats.MaxPauseNanos.Load() {
		n.stats.MaxPauseNanos.Store(int64(d))
	}
	n.log.Info("engine open over the owned partitions", "owned", fmt.Sprint(n.Owned()), "pause", d.String())
	return nil
}

// reserveIDs reserves a span of message ids: the offset of a record this
// node appends to the meta topic is unique in the cluster forever, so
// span o is [(o+1) << 32, (o+2) << 32).
func (n *Node) reserveIDs() (uint64, uint64, error) {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: n.topics.Meta, Partition: 0, Key: []byte("ids"), Value: []byte(n.cfg.Node)}
	if err := n.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return 0, 0, err
	}
	o := uint64(r.Offset)
	if o >= 1<<30 {
		return 0, 0, errors.New("cluster: the meta topic's offsets passed 2^30: message ids are exhausted")
	}
	return (o + 1) << 32, (o + 2) << 32, nil
}

// restore brings the store's copy of every owned partition up to the end
// of its changelog (read committed), from the position the store holds.
func (n *Node) restore(dir string, owned []bool) error {
	start := time.Now()
	st, err := store.OpenPebble(dir, store.PebbleOptions{Logger: n.log})
	if err != nil {
		return fmt.Errorf("cluster: open store for restore: %w", err)
	}
	defer st.Close()
	pos, err := engine.ClusterPositions(st, n.parts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Minute)
	defer cancel()
	ends, err := n.changelogEnds(ctx, owned)
	if err != nil {
		return err
	}
	from := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end <= pos[p] {
			delete(ends, p)
			continue
		}
		from[p] = kgo.NewOffset().At(pos[p])
	}
	if len(from) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.topics.Changelog: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}, n.cfg.ClientOpts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	b := st.NewBatch()
	var restored uint64
	for len(ends) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cluster: restore did not reach the changelog's end: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("cluster: restore %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := ends[r.Partition]
			if !ok || r.Offset >= end || ferr != nil {
				return
			}
			if !r.Attrs.IsControl() {
				kind, k, v, err := decodeChange(r)
				if err == nil {
					err = store.ApplyChange(b, kind, k, v)
				}
				if err != nil {
					ferr = err
					return
				}
				restored++
			}
			if r.Offset+1 >= end {
				b.Set(engine.ChangelogPositionKey(r.Partition), engine.ChangelogPositionValue(end))
				delete(ends, r.Partition)
			}
		})
		if ferr != nil {
			return ferr
		}
		if b.Len() > 4096 || len(ends) == 0 {
			if err := b.Commit(); err != nil {
				return err
			}
			b.Reset()
		}
	}
	if err := st.Flush(); err != nil {
		return err
	}
	n.stats.Restored.Add(restored)
	n.stats.RestoreNanos.Add(int64(time.Since(start)))
	n.log.Info("restored changelog", "partitions", len(from), "records", restored, "took", time.Since(start).String())
	return nil
}

// changelogEnds returns where the restore of each owned partition ends: the
// changelog's end once no transaction is open on it. A previous owner may
// still be ending its last transaction (or have died in one): reading only
// up to the last stable offset then would miss that transaction's
// changes, committed a moment later together with its input offsets. So
// the restore waits until the last stable offset reaches the high
// watermark (every transaction on the partition resolved), at most twice
// the transaction timeout, after which the broker has aborted a dead
// owner's transaction.
func (n *Node) changelogEnds(ctx context.Context, owned []bool) (map[int32]int64, error) {
	deadline := time.Now().Add(2*n.cfg.TxnTimeout + 5*time.Second)
	for {
		lso, err := n.adm.ListCommittedOffsets(ctx, n.topics.Changelog)
		if err == nil {
			err = lso.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: changelog stable offsets: %w", err)
		}
		hwm, err := n.adm.ListEndOffsets(ctx, n.topics.Changelog)
		if err == nil {
			err = hwm.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: changelog end offsets: %w", err)
		}
		ends := map[int32]int64{}
		open := []int32{}
		lso.Each(func(o kadm.ListedOffset) {
			p := o.Partition
			if int(p) >= len(owned) || !owned[p] {
				return
			}
			ends[p] = o.Offset
			if h, ok := hwm.Lookup(n.topics.Changelog, p); ok && h.Offset > o.Offset {
				open = append(open, p)
			}
		})
		if len(open) == 0 {
			return ends, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster: a transaction stays open on changelog partitions %v for more than %v; its producer is alive and not ending it", open, 2*n.cfg.TxnTimeout+5*time.Second)
		}
		n.log.Info("waiting for an open transaction on changelog partitions to end before restoring them", "partitions", fmt.Sprint(open))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fencePredecessor starts and aborts a transaction at once: registering
// the transactional id fences this node's previous incarnation and aborts
// the transaction it left open, instead of leaving its partitions' readers
// (and this node's own restore) waiting for the transaction timeout.
func (n *Node) fencePredecessor() error {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	if err := n.sess.Begin(); err != nil {
		return fmt.Errorf("cluster: begin the fencing transaction: %w", err)
	}
	r := &kgo.Record{Topic: n.topics.Meta, Partition: 0, Key: []byte("fence"), Value: []byte(n.cfg.Node)}
	perr := n.sess.ProduceSync(ctx, r).FirstErr()
	if _, err := n.sess.End(ctx, kgo.TryAbort); err != nil || perr != nil {
		return fmt.Errorf("cluster: fence the previous incarnation of node %s: %w", n.cfg.Node, errors.Join(perr, err))
	}
	return nil
}

// Collectors are the node's Prometheus metrics (the HTTP server registers
// them with SetEngine).
func (n *Node) Collectors() []prometheus.Collector {
	labels := prometheus.Labels{"node": n.cfg.Node, "cluster": n.cfg.Name}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shardfn_cluster_" + name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardfn_cluster_" + name, Help: help, ConstLabels: labels}, f)
	}
	st := &n.stats
	return []prometheus.Collector{
		gauge("partitions_active", "Partitions this node's engine serves.", func() float64 { return float64(len(n.Owned())) }),
		gauge("partitions", "P, the cluster's partition count.", func() float64 { return float64(n.parts) }),
		gauge("ready", "1 while the node runs an engine over its partitions.", func() float64 {
			if n.Ready() {
				return 1
			}
			return 0
		}),
		counter("commits_total", "Transactions committed.", func() float64 { return float64(st.Commits.Load()) }),
		counter("aborts_total", "Epochs aborted (rebalances, fencing, errors).", func() float64 { return float64(st.Aborts.Load()) }),
		counter("rebalances_total", "Assignment changes seen.", func() float64 { return float64(st.Rebalances.Load()) }),
		counter("engine_restarts_total", "Engines opened over a new assignment.", func() float64 { return float64(st.Restarts.Load()) }),
		gauge("commit_seconds", "Duration of the last commit (flush, offsets, end of transaction).", func() float64 {
			return time.Duration(st.CommitNanos.Load()).Seconds()
		}),
		gauge("last_pause_seconds", "How long the last engine restart (restore included) held processing.", func() float64 {
			return time.Duration(st.LastPauseNanos.Load()).Seconds()
		}),
		counter("restored_records_total", "Changelog records restored into the store.", func() float64 { return float64(st.Restored.Load()) }),
		counter("restore_seconds_total", "Time spent restoring changelogs.", func() float64 { return time.Duration(st.RestoreNanos.Load()).Seconds() }),
		gauge("input_lag_records", "Input records of this node's partitions not yet committed (sampled).", func() float64 { return float64(st.InputLag.Load()) }),
	}
}

// sampleLag refreshes Stats.InputLag every few seconds: the last stable
// offset of each owned input partition minus the group's committed offset.
func (n *Node) sampleLag() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	group := "shardfn-" + n.cfg.Name
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		ends, err1 := n.adm.ListCommittedOffsets(ctx, n.topics.In)
		offs, err2 := n.adm.FetchOffsets(ctx, group)
		cancel()
		if err1 != nil || err2 != nil {
			continue
		}
		var lag int64
		for _, p := range n.Owned() {
			end, ok := ends.Lookup(n.topics.In, p)
			if !ok {
				continue
			}
			at := int64(0)
			if o, ok := offs.Lookup(n.topics.In, p); ok && o.At >= 0 {
				at = o.At
			}
			lag += max(end.Offset-at, 0)
		}
		n.stats.InputLag.Store(lag)
	}
}
