package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/kafka"
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
	// StandbyInterval is how often a node brings its standby copies (the
	// partitions of the next node in the ring) up to date, between
	// epochs. Default 1s; negative: no standby copies.
	StandbyInterval time.Duration
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
	// KafkaIngress and KafkaEgress are the module's Kafka ingresses and
	// egresses (module.yaml). They must name the cluster's own brokers:
	// the node reads the ingress topics in its transactions (their offsets
	// commit with the messages they became) and writes egress records to
	// their topics in the same transactions (exactly once, whatever the
	// egress's semantic says). An ingress's consumer group and startup
	// position do not apply: the cluster's group reads from the earliest
	// offset the first time.
	KafkaIngress []kafka.IngressSpec
	KafkaEgress  []kafka.EgressSpec
	// Warm-up balancer (warmup.go). WarmupLag: a partition moves to a
	// node only when that node's copy of its changelog is at most this
	// many offsets behind the best copy in the group (default
	// DefaultWarmupLag; negative: no warm-up, plain cooperative-sticky).
	// ProbingInterval: how often the group's leader asks for a rebalance
	// while partitions wait for their targets to warm up (default 10s).
	WarmupLag       int64
	ProbingInterval time.Duration
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
	if c.StandbyInterval == 0 {
		c.StandbyInterval = time.Second
	}
	if c.WarmupLag == 0 { // warm-up (warmup.go)
		c.WarmupLag = DefaultWarmupLag
	}
	if c.ProbingInterval <= 0 {
		c.ProbingInterval = 10 * time.Second
	}
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 2000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for _, in := range c.KafkaIngress {
		if !sameBrokers(in.Brokers, c.Brokers) {
			return fmt.Errorf("cluster: Kafka ingress %s reads brokers %v; in cluster mode a module's Kafka ingress must read the cluster's own brokers (%v)", in.ID, in.Brokers, c.Brokers)
		}
	}
	for _, eg := range c.KafkaEgress {
		if !sameBrokers(eg.Brokers, c.Brokers) {
			return fmt.Errorf("cluster: Kafka egress %s writes brokers %v; in cluster mode a module's Kafka egress must write the cluster's own brokers (%v)", eg.ID, eg.Brokers, c.Brokers)
		}
	}
	return nil
}

// sameBrokers reports whether two broker lists name the same set.
func sameBrokers(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
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

	owned    atomic.Pointer[[]bool] // the group's assignment, by partition
	assignMu sync.Mutex             // serialises assign
	changed  atomic.Bool            // the assignment changed since the engine opened
	adopted  atomic.Pointer[[]bool] // the partitions the current engine was opened with
	eng      atomic.Pointer[engine.Engine]
	wake     chan struct{}

	reqMu    sync.Mutex
	requests map[uint64]chan engine.Message

	stats Stats

	routers map[string]*kafka.Router    // ingress topic -> its ingress's router
	egress  map[string]kafka.EgressSpec // egress log name -> the Kafka egress
	metaID  atomic.Pointer[[16]byte]    // the input topic's id (fenceCheck)

	// The group membership the current engine was opened under (the loop
	// goroutine's): every commit is made under it, so a node that was
	// dropped and rejoined (a new generation, possibly with the same
	// partitions) cannot commit with an engine that missed what another
	// node did meanwhile.
	member string
	gen    int32
	inPos  []int64 // per input partition, the next offset the store's state has not applied

	lastStandby time.Time // the last standby pass (standby.go)
	lastExpire  time.Time // the last expiry of idempotency keys (epoch.go)
	sessOpts    []kgo.Opt // the group transaction session's options (renewSession)
	fwd         forwarder // state reads forwarded to the owner (forward.go)

	marks replayMarks // replayed dead letters, from the meta topic (ops.go)
	warm  warmup      // warm-up balancer (warmup.go): positions advertised, warm-up set

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	err    atomic.Pointer[error]
	ready  atomic.Bool

	scrapeMu sync.RWMutex // a metrics scrape reads an engine that is not closed (engine_metrics.go)

	// testAfterCommit, when set (tests only), runs right after an epoch's
	// transaction committed, before the engine learns it.
	testAfterCommit atomic.Pointer[func(*engine.Epoch)]
}

// Stats are a node's counters.
type Stats struct {
	Commits, Aborts, Rebalances, Restarts atomic.Uint64
	Restored                              atomic.Uint64 // changelog records restored
	RestoreNanos                          atomic.Int64  // time spent restoring
	LastPauseNanos, MaxPauseNanos         atomic.Int64  // engine restarts
	CommitNanos                           atomic.Int64  // last commit's duration
	Replayed                              atomic.Uint64 // input records skipped: below the applied position
	StandbyPartitions, StandbyLag         atomic.Int64  // standby copies kept, and the changelog records they lag
	StandbyApplied                        atomic.Uint64 // changelog records applied to standby copies
	LastActive                            atomic.Int64  // unix ns of the last epoch that polled or collected anything
	Sessions                              atomic.Uint64 // group sessions replaced after a producer failed for good
	InputLag                              atomic.Int64  // sampled input lag of the owned partitions
	// Warm-up (warmup.go).
	WarmingPartitions, WarmupLag atomic.Int64  // partitions this node warms up, and the changelog offsets they lag (last pass)
	WarmupHeld                   atomic.Int64  // as leader: partitions kept from their targets at the last balance
	WarmupProbes                 atomic.Uint64 // rebalances this node asked for (caught up, or probing)
	TakeoverLag, MaxTakeoverLag  atomic.Int64  // changelog offsets the store lacked of a partition taken over (last takeover's largest, and the largest)
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
	n.moduleKafka()
	if err := n.warmupStart(); err != nil { // warm-up (warmup.go): positions before the first join
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
	// Read committed: a reply is produced in the transaction that commits
	// the work it answers, and is seen only once that committed.
	n.rep, err = kgo.NewClient(append(base, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.topics.Replies: repEnd}))...)
	if err != nil {
		n.prod.Close()
		return nil, fmt.Errorf("cluster: replies client: %w", err)
	}
	n.sessOpts = append(base,
		kgo.TransactionalID("shardfn-"+cfg.Name+"-"+cfg.Node),
		kgo.TransactionTimeout(cfg.TxnTimeout),
		kgo.ConsumerGroup("shardfn-"+cfg.Name),
		kgo.ConsumeTopics(append([]string{n.topics.In}, slices.Sorted(maps.Keys(n.routers))...)...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.InstanceID(cfg.Node),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.SessionTimeout*2),
		kgo.HeartbeatInterval(cfg.SessionTimeout/6),
		kgo.Balancers(n.warmupBalancers()...), // warm-up (warmup.go)
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(cfg.CommitInterval),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { n.assign(m[n.topics.In], false) }),
	)
	n.sess, err = kgo.NewGroupTransactSession(n.sessOpts...)
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
	n.assignMu.Lock() // callbacks may run on different goroutines
	defer n.assignMu.Unlock()
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
	n.log.Info("assignment changed", "added", add, "partitions", ranges(ps), "owned", count(next))
}

// ranges writes partitions compactly: "0-3,7,9-12".
func ranges(ps []int32) string {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	var b []byte
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(ps[i]), 10)
		if j > i {
			b = append(append(b, '-'), strconv.AppendInt(nil, int64(ps[j]), 10)...)
		}
		i = j + 1
	}
	return string(b)
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

// Err is why the node cannot serve now: the last failure to open an
// engine over its partitions (a storage error, a changelog that cannot be
// read), until an open succeeds; the node keeps retrying meanwhile.
func (n *Node) Err() error {
	if p := n.err.Load(); p != nil {
		return *p
	}
	return nil
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
		if e := n.eng.Swap(nil); e != nil {
			n.closeEngine(e, errors.New("node closing"))
		}
	}()
	var ep *engine.Epoch
	for n.ctx.Err() == nil {
		if m, g := n.sess.Client().GroupMetadata(); m != n.member || g != n.gen {
			n.changed.Store(true) // a rebalance, or a rejoin after the node was dropped
		}
		if n.eng.Load() == nil || n.changed.Load() {
			ep = &engine.Epoch{} // its recording batches belong to one engine's store
			if err := n.reopen(); err != nil {
				if n.ctx.Err() != nil {
					return
				}
				n.log.Error("cannot open the engine; retrying", "err", err)
				n.err.Store(&err)
				time.Sleep(time.Second)
				continue
			}
			n.err.Store(nil)
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
		err := n.epoch(ep, recs)
		if err == nil && !n.changed.Load() {
			n.standbyPass(n.eng.Load())
		}
		var be beginError
		if errors.As(err, &be) && n.ctx.Err() == nil {
			n.renewSession(be.err)
		}
		if err != nil && n.ctx.Err() == nil {
			n.log.Info("epoch aborted; reopening the engine", "err", err)
			n.stats.Aborts.Add(1)
			if e := n.eng.Swap(nil); e != nil {
				n.closeEngine(e, err)
			}
		}
	}
}

// moduleKafka sets up the routers of the module's Kafka ingresses and the
// names of its Kafka egresses.
func (n *Node) moduleKafka() {
	known := func(ft kafka.FunctionType) bool {
		for _, sp := range n.cfg.Specs {
			if sp.Namespace == ft.Namespace && (sp.Type == ft.Type || sp.Type == "*") {
				return true
			}
		}
		return false
	}
	opts := n.cfg.Engine
	opts.EnsureDefaults()
	n.routers = map[string]*kafka.Router{}
	for _, spec := range n.cfg.KafkaIngress {
		r := kafka.NewRouter(spec, known, opts.MaxMessageBytes, nil, n.log)
		for _, t := range r.Topics() {
			n.routers[t] = r
		}
	}
	n.egress = map[string]kafka.EgressSpec{}
	for _, eg := range n.cfg.KafkaEgress {
		n.egress[kafka.EgressLog(eg.ID)] = eg
	}
}

// beginError: the session could not begin a transaction. franz-go then
// holds its producer id as failed for good (for one, after the broker
// restarted and forgot it: INVALID_PRODUCER_EPOCH), so the session must
// be replaced.
type beginError struct{ err error }

func (e beginError) Error() string { return "begin transaction: " + e.err.Error() }

// renewSession replaces the group transaction session after its producer
// failed for good: the old one is closed (a static member: it stays in
// the group, so the node keeps its partitions), a new one registers the
// transactional id again (fencing what the old one left open), and the
// engine reopens.
func (n *Node) renewSession(cause error) {
	n.log.Warn("the transactional producer failed for good; starting a new session", "err", cause)
	n.sess.Close()
	for n.ctx.Err() == nil {
		s, err := kgo.NewGroupTransactSession(n.sessOpts...)
		if err == nil {
			n.sess = s
			if err = n.fencePredecessor(); err == nil {
				break
			}
			s.Close()
		}
		n.log.Error("cannot start a new session; retrying", "err", err)
		select {
		case <-n.ctx.Done():
		case <-time.After(time.Second):
		}
	}
	n.stats.Sessions.Add(1)
	n.changed.Store(true)
}
