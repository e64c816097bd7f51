package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

var (
	countSpec    = engine.ValueSpec{Name: "n", Type: engine.TypeLong}
	pathSpec     = engine.ValueSpec{Name: "paths", Type: "test/paths"}
	sentSpec     = engine.ValueSpec{Name: "sent", Type: engine.TypeLong}
	disorderSpec = engine.ValueSpec{Name: "disorder", Type: engine.TypeLong}
	seenSpec     = engine.MapSpec{Name: "seen"}
)

// counterSpecs: test/counter counts "inc" messages; "fwd" (payload: an id)
// sends "inc" to that counter; "later" counts itself after 5 ms through a
// delayed message; "get" replies with the count.
func counterSpecs() []engine.FunctionSpec {
	return []engine.FunctionSpec{{
		Namespace: "test", Type: "counter",
		States: []engine.ValueSpec{countSpec, pathSpec, sentSpec, disorderSpec},
		Maps:   []engine.MapSpec{seenSpec},
		Function: engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
			switch msg.Type {
			case "inc":
				n, _, err := ctx.GetInt64(countSpec)
				if err != nil {
					return err
				}
				if err := ctx.SetInt64(countSpec, n+1); err != nil {
					return err
				}
				path, from, seq := parseInc(msg.Value)
				if from != "" { // per-sender order: each sender's sequence only grows
					last, _, err := ctx.MapGet(seenSpec, from)
					if err != nil {
						return err
					}
					if l, _ := strconv.ParseInt(string(last), 10, 64); seq <= l {
						d, _, _ := ctx.GetInt64(disorderSpec)
						if err := ctx.SetInt64(disorderSpec, d+1); err != nil {
							return err
						}
					}
					if err := ctx.MapSet(seenSpec, from, strconv.AppendInt(nil, seq, 10)); err != nil {
						return err
					}
				}
				// Which way each increment came: d(irect), f(orwarded), l(ater).
				paths, _ := ctx.Get(pathSpec)
				return ctx.Set(pathSpec, append(append([]byte(nil), paths...), path...))
			case "fwd":
				sent, _, err := ctx.GetInt64(sentSpec)
				if err != nil {
					return err
				}
				if err := ctx.SetInt64(sentSpec, sent+1); err != nil {
					return err
				}
				v := fmt.Appendf(nil, "f:%s:%d", ctx.Self().ID, sent+1)
				ctx.Send(engine.Address{Namespace: "test", Type: "counter", ID: string(msg.Value)}, engine.Message{Type: "inc", Value: v})
			case "later":
				ctx.SendAfter(5*time.Millisecond, ctx.Self(), engine.Message{Type: "inc", Value: []byte("l")}, "")
			case "fwd-later": // payload "<delay ms> <target id>": forward after the delay
				var ms int
				var to string
				fmt.Sscanf(string(msg.Value), "%d %s", &ms, &to)
				ctx.SendAfter(time.Duration(ms)*time.Millisecond, ctx.Self(), engine.Message{Type: "fwd", Value: []byte(to)}, "")
			case "get":
				n, _, err := ctx.GetInt64(countSpec)
				if err != nil {
					return err
				}
				d, _, err := ctx.GetInt64(disorderSpec)
				if err != nil {
					return err
				}
				paths, _ := ctx.Get(pathSpec)
				ctx.Reply(engine.Message{Type: "count", Value: fmt.Appendf(nil, "%d %d %s", n, d, paths)})
			}
			return nil
		}),
	}}
}

// parseInc splits an "inc" payload: "d", "l", or "f:<sender>:<seq>".
func parseInc(v []byte) (path, from string, seq int64) {
	parts := strings.Split(string(v), ":")
	if len(parts) == 3 {
		seq, _ = strconv.ParseInt(parts[2], 10, 64)
		return parts[0], parts[1], seq
	}
	return string(v), "", 0
}

type testCluster struct {
	t       *testing.T
	kf      *kfake.Cluster
	name    string
	parts   int32
	mu      sync.Mutex
	nodes   map[string]*Node
	dirs    map[string]string
	session time.Duration
	paths   map[string]string // the last "get": the paths of each increment
	specs   []engine.FunctionSpec
	commit  time.Duration // commit interval (default 20 ms)
	config  func(*Config) // adjusts a node's configuration before it starts (forward_test.go)
}

func newTestCluster(t *testing.T, parts int32, opts ...kfake.Opt) *testCluster {
	kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3),
		kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": "500"})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	return &testCluster{t: t, kf: kf, name: "t", parts: parts, nodes: map[string]*Node{}, dirs: map[string]string{}, session: 2 * time.Second, paths: map[string]string{}}
}

func (c *testCluster) start(name string) *Node {
	c.t.Helper()
	dir, ok := c.dirs[name]
	if !ok {
		dir = c.t.TempDir()
		c.dirs[name] = dir
	}
	lvl := slog.LevelWarn
	switch os.Getenv("CLUSTER_LOG") {
	case "":
	case "debug":
		lvl = slog.LevelDebug
	default:
		lvl = slog.LevelInfo
	}
	specs := c.specs
	if specs == nil {
		specs = counterSpecs()
	}
	cfg := Config{
		Brokers: c.kf.ListenAddrs(), Name: c.name, Node: name,
		Topics:         TopicOptions{Partitions: c.parts},
		CommitInterval: cmp.Or(c.commit, 20*time.Millisecond), SessionTimeout: c.session, TxnTimeout: 8 * time.Second,
		Engine: engine.Options{DataDir: dir, Shards: 2, MemoryBudget: 8 << 20},
		Specs:  specs,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	}
	if c.config != nil {
		c.config(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[name] = n
	c.mu.Unlock()
	c.t.Cleanup(func() { _ = n.Close() })
	return n
}

// stop stops a node as a crash or a restart would (it stays in the
// group); leave takes it out.
func (c *testCluster) stop(name string, leave bool) {
	c.mu.Lock()
	n := c.nodes[name]
	delete(c.nodes, name)
	c.mu.Unlock()
	if leave {
		if err := n.Leave(); err != nil {
			c.t.Error(err)
		}
		return
	}
	_ = n.Close()
}

func (c *testCluster) any(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.nodes))
	for k := range c.nodes {
		names = append(names, k)
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return c.nodes[names[i%len(names)]]
}

// settled waits until every partition is owned by exactly one running
// node's engine.
func (c *testCluster) settled(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		owners := make([]int, c.parts)
		ready := true
		for _, n := range c.nodes {
			// Every node serves some partition: a node that joined has
			// been given its share (cooperative rebalancing takes two
			// rounds).
			if !n.Ready() || n.changed.Load() || len(n.Owned()) == 0 {
				ready = false
			}
			for _, p := range n.Owned() {
				owners[p]++
			}
		}
		c.mu.Unlock()
		ok := ready
		for _, o := range owners {
			if o != 1 {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("not settled after %v: owners per partition %v", timeout, owners)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func counter(id int) engine.Address {
	return engine.Address{Namespace: "test", Type: "counter", ID: "c" + strconv.Itoa(id)}
}

// retry sends through any node until one accepts (a node may be
// rebalancing).
func (c *testCluster) send(i int, to engine.Address, msg engine.Message) {
	c.t.Helper()
	for try := 0; ; try++ {
		n := c.any(i + try)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.Send(ctx, to, msg)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, engine.ErrInDoubt) {
			c.t.Fatalf("send in doubt: %v", err) // loopback kfake: should not happen
		}
		if try > 400 {
			c.t.Fatalf("send: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *testCluster) get(to engine.Address) int {
	c.t.Helper()
	for try := 0; ; try++ {
		n := c.any(try)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := n.Request(ctx, to, engine.Message{Type: "get"})
		cancel()
		if err == nil {
			f := strings.Fields(string(m.Value))
			v, err := strconv.Atoi(f[0])
			if d, _ := strconv.Atoi(f[1]); d != 0 {
				c.t.Fatalf("%s received %d messages out of their sender's order", to, d)
			}
			if len(f) > 2 {
				c.paths[to.ID] = f[2]
			}
			if err != nil {
				c.t.Fatal(err)
			}
			return v
		}
		if try > 100 {
			c.t.Fatalf("get %s: %v", to, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCounts waits until every counter has its expected count, and fails
// if one goes past it (applied twice) or never reaches it (lost).
func (c *testCluster) waitCounts(want map[int]int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for id, w := range want {
			got := c.get(counter(id))
			if got > w {
				if os.Getenv("CLUSTER_DUMP") != "" {
					c.dumpChangelog(fmt.Sprintf("counter %d", id))
				}
				c.t.Fatalf("counter %d = %d, more than the %d sent: applied twice", id, got, w)
			}
			if got != w && bad == "" {
				bad = fmt.Sprintf("counter %d = %d, want %d", id, got, w)
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			if os.Getenv("CLUSTER_DUMP") != "" {
				c.dumpChangelog(bad)
			}
			c.t.Fatalf("counts never reached: %s (lost); paths of each counter %v", bad, c.paths)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestThreeNodesExactlyOnce(t *testing.T) {
	c := newTestCluster(t, 16)
	c.start("a")
	c.start("b")
	c.start("c")
	c.settled(30 * time.Second)
	want := map[int]int{}
	for i := range 300 {
		id := i % 20
		switch i % 3 {
		case 0:
			c.send(i, counter(id), engine.Message{Type: "inc", Value: []byte("d")})
		case 1: // through another counter, likely on another node
			c.send(i, counter((id+7)%20), engine.Message{Type: "fwd", Value: []byte("c" + strconv.Itoa(id))})
		case 2:
			c.send(i, counter(id), engine.Message{Type: "later"})
		}
		want[id]++
	}
	c.waitCounts(want, 30*time.Second)
}

// load sends counter messages through any node until stop is closed and
// returns what each counter must reach.
func (c *testCluster) load(stop <-chan struct{}, counters int) <-chan map[int]int {
	out := make(chan map[int]int, 1)
	go func() {
		want := map[int]int{}
		for i := 0; ; i++ {
			select {
			case <-stop:
				out <- want
				return
			default:
			}
			id := i % counters
			switch i % 3 {
			case 0:
				c.send(i, counter(id), engine.Message{Type: "inc", Value: []byte("d")})
			case 1:
				c.send(i, counter((id+7)%counters), engine.Message{Type: "fwd", Value: []byte("c" + strconv.Itoa(id))})
			case 2:
				c.send(i, counter(id), engine.Message{Type: "later"})
			}
			want[id]++
		}
	}()
	return out
}

// TestJoinLeaveRestartUnderLoad: under a steady load, a node joins, one
// leaves for good, and one is stopped and restarted with its data (static
// membership: it comes back to its partitions and restores only the
// changelog it missed). Every message sent is applied exactly once.
func TestJoinLeaveRestartUnderLoad(t *testing.T) {
	c := newTestCluster(t, 16)
	c.start("a")
	c.start("b")
	c.settled(30 * time.Second)
	stop := make(chan struct{})
	res := c.load(stop, 30)
	time.Sleep(500 * time.Millisecond)
	c.start("c") // joins
	c.settled(30 * time.Second)
	time.Sleep(300 * time.Millisecond)
	c.stop("a", true) // leaves
	c.settled(30 * time.Second)
	time.Sleep(300 * time.Millisecond)
	c.stop("b", false) // stops: its partitions wait for it
	time.Sleep(500 * time.Millisecond)
	nb := c.start("b")
	c.settled(30 * time.Second)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	want := <-res
	c.waitCounts(want, 30*time.Second)
	if nb.Stats().Restored.Load() == 0 && len(nb.Owned()) > 0 {
		t.Log("restarted node restored no changelog record (it missed nothing)")
	}
	total := 0
	for _, w := range want {
		total += w
	}
	t.Logf("%d messages exactly once; node b restored %d changelog records after its restart", total, nb.Stats().Restored.Load())
}

// dumpChangelog prints the changelog records of the counter named in bad
// (debugging aid: CLUSTER_DUMP=1).
func (c *testCluster) dumpChangelog(bad string) {
	var id int
	fmt.Sscanf(bad, "counter %d", &id)
	addr := counter(id)
	p := PartitionOfAddress(addr, c.parts)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kf.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{TopicNames(c.name).Changelog: {p: kgo.NewOffset().AtStart()}}))
	if err != nil {
		c.t.Log(err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			if r.Attrs.IsControl() {
				c.t.Logf("@%d control pid=%d epoch=%d key=%x", r.Offset, r.ProducerID, r.ProducerEpoch, r.Key)
				return
			}
			if strings.Contains(string(r.Key), addr.ID+"\x01n") || (strings.Contains(string(r.Key), addr.ID) && strings.HasSuffix(string(r.Key), "n")) {
				c.t.Logf("@%d pid=%d epoch=%d value=%x", r.Offset, r.ProducerID, r.ProducerEpoch, r.Value[len(r.Value)-8:])
			}
		})
	}
}

// TestScaleOutOneToThree: one node takes the load alone, then two more
// join. A partition becomes active on its new node only once its
// changelog is restored to the end (the engine opens after the restore);
// the longest processing pause of each node is reported.
func TestScaleOutOneToThree(t *testing.T) {
	c := newTestCluster(t, 16)
	c.start("a")
	c.settled(30 * time.Second)
	stop := make(chan struct{})
	res := c.load(stop, 60)
	time.Sleep(1500 * time.Millisecond)
	settle, pz := c.joinTwoUnderLoad(stop, res, c.settled)
	for _, name := range []string{"a", "b", "c"} {
		st := c.nodes[name].Stats()
		t.Logf("node %s: %d partitions, longest pause %v, %d changelog records restored in %v",
			name, len(c.nodes[name].Owned()), time.Duration(st.MaxPauseNanos.Load()).Round(time.Millisecond),
			st.Restored.Load(), time.Duration(st.RestoreNanos.Load()).Round(time.Millisecond))
	}
	t.Logf("1 -> 3 nodes settled in %v under load; longest time a partition was served by no node %v, all partitions' unserved time %v",
		settle.Round(time.Millisecond), pz[0].Round(time.Millisecond), pz[1].Round(time.Millisecond))
}

// joinTwoUnderLoad starts nodes b and c while the load runs, waits with
// wait until they have their partitions, stops the load and waits until
// every message was applied once. It returns how long the join took to
// settle and servePauses' figures over it.
func (c *testCluster) joinTwoUnderLoad(stop chan struct{}, res <-chan map[int]int, wait func(time.Duration)) (time.Duration, [2]time.Duration) {
	c.t.Helper()
	stopWatch := make(chan struct{})
	pauses := c.servePauses(stopWatch)
	start := time.Now()
	c.start("b")
	c.start("c")
	wait(60 * time.Second)
	settle := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	close(stopWatch)
	close(stop)
	want := <-res
	c.waitCounts(want, 30*time.Second)
	return settle, <-pauses
}

// servePauses samples, every few milliseconds until stop is closed, which
// partitions a ready node serves, and returns the longest time any
// partition went unserved (a node reopening its engine serves nothing)
// and the sum over partitions of their unserved time.
func (c *testCluster) servePauses(stop <-chan struct{}) <-chan [2]time.Duration {
	out := make(chan [2]time.Duration, 1)
	go func() {
		since := make([]time.Time, c.parts) // zero: served at the last sample
		var longest, total time.Duration
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				out <- [2]time.Duration{longest, total}
				return
			case <-tick.C:
			}
			served := make([]bool, c.parts)
			c.mu.Lock()
			for _, n := range c.nodes {
				if n.Ready() && !n.changed.Load() {
					for _, p := range n.Owned() {
						served[p] = true
					}
				}
			}
			c.mu.Unlock()
			now := time.Now()
			for p, ok := range served {
				switch {
				case !ok && since[p].IsZero():
					since[p] = now
				case ok && !since[p].IsZero():
					d := now.Sub(since[p])
					longest, total = max(longest, d), total+d
					since[p] = time.Time{}
				}
			}
		}
	}()
	return out
}
