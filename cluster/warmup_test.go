package cluster

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type assignWant struct {
	active, warming map[string][]int32
	kinds           map[int32]string // partition -> decision kind
}

type assignCase struct {
	name    string
	members []warmMember
	target  map[string][]int32
	want    assignWant
}

// assignCases are TestWarmupAssign's table (lag bound 10): partitions
// with a live owner.
func assignCases() []assignCase {
	return []assignCase{{
		name: "caught-up target gets the partition, lagging target does not: the owner keeps it",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0, 1}, Generation: 3, Pos: []int64{100, 100}},
			{ID: "b", Name: "b", Generation: -1, Pos: []int64{90, 89}},
		},
		target: map[string][]int32{"b": {0, 1}},
		want: assignWant{
			active:  map[string][]int32{"a": {1}, "b": {0}},
			warming: map[string][]int32{"b": {1}},
			kinds:   map[int32]string{0: "move", 1: "hold"},
		},
	}, {
		name: "the best position counts, not the owner's: a member ahead of the owner sets the bound",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0}, Generation: 3, Pos: []int64{50}},
			{ID: "b", Name: "b", Generation: 3, Pos: []int64{45}},
			{ID: "c", Name: "c", Generation: 3, Pos: []int64{100}},
		},
		target: map[string][]int32{"b": {0}},
		want: assignWant{
			active:  map[string][]int32{"a": {0}},
			warming: map[string][]int32{"b": {0}},
			kinds:   map[int32]string{0: "hold"},
		},
	}}
}

// orphanCases: partitions without a live owner, and what their members
// advertise.
func orphanCases() []assignCase {
	return []assignCase{{
		name: "no live previous owner: the most caught-up member, the target warms up",
		members: []warmMember{
			{ID: "b", Name: "b", Generation: 4, Pos: []int64{50, 300}},
			{ID: "c", Name: "c", Generation: 4, Pos: []int64{80, 0}},
		},
		target: map[string][]int32{"b": {0}, "c": {1}},
		want: assignWant{
			active:  map[string][]int32{"c": {0}, "b": {1}},
			warming: map[string][]int32{"b": {0}, "c": {1}},
			kinds:   map[int32]string{0: "orphan", 1: "orphan"},
		},
	}, {
		name: "no live previous owner, target caught up: the target",
		members: []warmMember{
			{ID: "b", Name: "b", Generation: 4, Pos: []int64{75}},
			{ID: "c", Name: "c", Generation: 4, Pos: []int64{80}},
		},
		target: map[string][]int32{"b": {0}},
		want: assignWant{
			active: map[string][]int32{"b": {0}},
			kinds:  map[int32]string{0: "move"},
		},
	}, {
		name: "an orphan goes to the caught-up member with the fewest partitions, not the furthest ahead",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{1, 2}, Generation: 4, Pos: []int64{100, 100, 100}},
			{ID: "b", Name: "b", Generation: 4, Pos: []int64{95, 0, 0}},
			{ID: "c", Name: "c", Generation: 4, Pos: []int64{0, 0, 0}},
		},
		target: map[string][]int32{"a": {1, 2}, "c": {0}},
		want: assignWant{
			active:  map[string][]int32{"a": {1, 2}, "b": {0}},
			warming: map[string][]int32{"c": {0}},
			kinds:   map[int32]string{0: "orphan"},
		},
	}, {
		name: "a held partition goes to another caught-up member short of its share instead",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0, 1, 2, 3}, Generation: 4, Pos: []int64{100, 100, 100, 100}},
			{ID: "b", Name: "b", Generation: -1, Pos: []int64{0, 0, 0, 0}},
			{ID: "c", Name: "c", Generation: 4, Pos: []int64{100, 100, 0, 0}},
		},
		target: map[string][]int32{"b": {0, 1}, "c": {2, 3}},
		want: assignWant{
			active:  map[string][]int32{"a": {2, 3}, "c": {0, 1}},
			warming: map[string][]int32{"c": {2, 3}},
			kinds:   map[int32]string{0: "substitute", 1: "substitute", 2: "hold", 3: "hold"},
		},
	}, {
		name: "orphans among equally caught-up members go to the one given fewest",
		members: []warmMember{
			{ID: "a", Name: "a", Generation: 4, Pos: []int64{0, 0, 0, 0}},
			{ID: "b", Name: "b", Generation: 4, Pos: []int64{100, 100, 100, 100}},
			{ID: "c", Name: "c", Generation: 4, Pos: []int64{100, 100, 100, 100}},
		},
		target: map[string][]int32{"a": {0, 1, 2, 3}},
		want: assignWant{
			active:  map[string][]int32{"b": {0, 2}, "c": {1, 3}},
			warming: map[string][]int32{"a": {0, 1, 2, 3}},
			kinds:   map[int32]string{0: "orphan", 1: "orphan", 2: "orphan", 3: "orphan"},
		},
	}, {
		name: "a member whose positions cannot be read gets its target at once (as cooperative-sticky)",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0}, Generation: 3, Pos: []int64{100}},
			{ID: "b", Name: "b", Generation: -1, Pos: nil},
		},
		target: map[string][]int32{"b": {0}},
		want: assignWant{
			active: map[string][]int32{"b": {0}},
			kinds:  map[int32]string{0: "move"},
		},
	}, {
		name: "a stale claim (older generation) does not make its member the owner",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0}, Generation: 2, Pos: []int64{100}},
			{ID: "b", Name: "b", Owned: []int32{0}, Generation: 5, Pos: []int64{100}},
			{ID: "c", Name: "c", Generation: 5, Pos: []int64{0}},
		},
		target: map[string][]int32{"c": {0}},
		want: assignWant{
			active:  map[string][]int32{"b": {0}},
			warming: map[string][]int32{"c": {0}},
			kinds:   map[int32]string{0: "hold"},
		},
	}, {
		name: "a partition on its target stays, whatever the positions",
		members: []warmMember{
			{ID: "a", Name: "a", Owned: []int32{0}, Generation: 3, Pos: []int64{0}},
			{ID: "b", Name: "b", Generation: 3, Pos: []int64{500}},
		},
		target: map[string][]int32{"a": {0}},
		want:   assignWant{active: map[string][]int32{"a": {0}}},
	}}
}

// TestWarmupAssign: the assignment function on given targets.
func TestWarmupAssign(t *testing.T) {
	for _, tc := range append(assignCases(), orphanCases()...) {
		t.Run(tc.name, func(t *testing.T) {
			parts := int32(len(tc.members[0].Pos))
			if parts == 0 {
				parts = 1
			}
			res := warmupAssign(tc.members, tc.target, parts, 10)
			if !equalAssign(res.Active, tc.want.active) {
				t.Errorf("active %v, want %v", res.Active, tc.want.active)
			}
			if !equalAssign(res.Warming, tc.want.warming) {
				t.Errorf("warming %v, want %v", res.Warming, tc.want.warming)
			}
			kinds := map[int32]string{}
			for _, d := range res.Decisions {
				kinds[d.Partition] = d.Kind
			}
			if !maps.Equal(kinds, tc.want.kinds) && (len(kinds) > 0 || len(tc.want.kinds) > 0) {
				t.Errorf("decisions %v, want %v", kinds, tc.want.kinds)
			}
			held := 0
			for _, k := range tc.want.kinds {
				if k == "hold" || k == "orphan" {
					held++
				}
			}
			if res.Held != held {
				t.Errorf("held %d, want %d", res.Held, held)
			}
		})
	}
}

func equalAssign(a, b map[string][]int32) bool {
	norm := func(m map[string][]int32) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if len(v) > 0 {
				v = slices.Clone(v)
				slices.Sort(v)
				out[k] = ranges(v)
			}
		}
		return out
	}
	return maps.Equal(norm(a), norm(b))
}

func TestWarmupMetaEncoding(t *testing.T) {
	pos := []int64{0, 7, 0, 0, 1 << 40, 3, 0, 0}
	got, err := decodeWarmupMeta(encodeWarmupMeta(pos), 8)
	if err != nil || !slices.Equal(got, pos) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	ws := []int32{1, 2, 6, 7}
	gotW, err := decodeWarmSet(encodeWarmSet(ws), 8)
	if err != nil || !slices.Equal(gotW, ws) {
		t.Fatalf("warm set round trip: %v %v", gotW, err)
	}
	if w, err := decodeWarmSet(nil, 8); err != nil || len(w) != 0 {
		t.Fatalf("empty warm set: %v %v", w, err)
	}
	good := encodeWarmupMeta(pos)
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":          {nil, "empty"},
		"newer version":  {append([]byte{2}, good[1:]...), "version 2"},
		"other P":        {encodeWarmupMeta(make([]int64, 16)), "has 16 partitions"},
		"truncated":      {good[:len(good)-1], "truncated"},
		"trailing bytes": {append(slices.Clone(good), 0), "past the end"},
		"out of range":   {[]byte{1, 8, 1, 9, 1}, "out of range"},
	} {
		_, err := decodeWarmupMeta(c.b, 8)
		if !errors.Is(err, errWarmupMeta) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one saying %q", name, err, c.want)
		}
	}
	if _, err := decodeWarmSet([]byte{1, 2, 9, 0}, 8); !errors.Is(err, errWarmupMeta) {
		t.Errorf("warm set out of range: %v", err)
	}
}

// balanceMember is one member as a test of the whole balancer sees it.
type balanceMember struct {
	name  string
	owned []int32
	gen   int32
	pos   []int64 // nil: its metadata carries garbage
}

// balanceOnce runs the warm-up balancer as the group's leader would and
// returns each member's active partitions and warm-up set (read back
// through the member's own ParseSyncAssignment).
func balanceOnce(t *testing.T, parts int32, lag int64, ms []balanceMember) (active, warm map[string][]int32) {
	t.Helper()
	return balanceTopic(t, parts, parts, lag, ms)
}

// balanceTopic is balanceOnce with the input topic's partition count as
// the leader's client knows it (topicParts).
func balanceTopic(t *testing.T, parts, topicParts int32, lag int64, ms []balanceMember) (active, warm map[string][]int32) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const topic = "in"
	var members []kmsg.JoinGroupResponseMember
	bals := map[string]*warmupBalancer{}
	warm = map[string][]int32{}
	for _, m := range ms {
		pos := m.pos
		name := m.name
		b := newWarmupBalancer(topic, parts, lag, log, func() []int64 { return pos },
			func(w []int32, on bool) {
				if !on {
					t.Errorf("%s: warm-up off", name)
				}
				warm[name] = w
			}, func(int32, warmupResult) {})
		bals[m.name] = b
		cur := map[string][]int32{}
		if len(m.owned) > 0 {
			cur[topic] = m.owned
		}
		meta := b.JoinGroupMetadata([]string{topic}, cur, m.gen)
		if m.pos == nil {
			var md kmsg.ConsumerMemberMetadata
			if err := md.ReadFrom(meta); err != nil {
				t.Fatal(err)
			}
			md.UserData = []byte{9, 9, 9}
			meta = md.AppendTo(nil)
		}
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = m.name+"-id", kmsg.StringPtr(m.name), meta
		members = append(members, jm)
	}
	leader := bals[ms[0].name]
	mb, _, err := leader.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{topic: topicParts})
	if err != nil {
		t.Fatal(err)
	}
	active = map[string][]int32{}
	for _, a := range into.IntoSyncAssignment() {
		name := strings.TrimSuffix(a.MemberID, "-id")
		got, err := bals[name].ParseSyncAssignment(a.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		active[name] = got[topic]
	}
	return active, warm
}

// TestWarmupBalancerCooperative: the whole balancer over two rebalances.
// A caught-up joiner gets its share only in the second rebalance (the
// first revokes it from the owner: a partition revoked from one member is
// never given to another in the same generation); a lagging joiner gets
// nothing and is told to warm its share up; a joiner whose metadata cannot
// be read gets its share as under cooperative-sticky.
func TestWarmupBalancerCooperative(t *testing.T) {
	all := []int32{0, 1, 2, 3}
	full := []int64{100, 100, 100, 100}
	for _, tc := range []struct {
		name     string
		joinPos  []int64
		moves    bool
		wantWarm bool
	}{
		{"caught up", []int64{95, 95, 95, 95}, true, false},
		{"lagging", []int64{0, 0, 0, 0}, false, true},
		{"unreadable metadata", nil, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			active, warm := balanceOnce(t, 4, 10, []balanceMember{
				{name: "a", owned: all, gen: 5, pos: full},
				{name: "b", gen: -1, pos: tc.joinPos},
			})
			if len(active["b"]) != 0 {
				t.Fatalf("first rebalance gave b %v while a owned them: against the cooperative protocol", active["b"])
			}
			kept := active["a"]
			if tc.moves && len(kept) != 2 {
				t.Fatalf("first rebalance: a keeps %v, want 2 partitions revoked for b", kept)
			}
			if !tc.moves && !slices.Equal(kept, all) {
				t.Fatalf("first rebalance: a keeps %v, want all (b lags)", kept)
			}
			if tc.wantWarm != (len(warm["b"]) == 2) || len(warm["a"]) != 0 {
				t.Fatalf("warm-up sets %v", warm)
			}
			// The second rebalance (a rejoins after revoking; b with the
			// positions it has now).
			active, _ = balanceOnce(t, 4, 10, []balanceMember{
				{name: "a", owned: kept, gen: 6, pos: full},
				{name: "b", gen: 6, pos: tc.joinPos},
			})
			if tc.moves && (len(active["b"]) != 2 || len(active["a"]) != 2) {
				t.Fatalf("second rebalance: %v, want 2 partitions each", active)
			}
			if !tc.moves && len(active["b"]) != 0 {
				t.Fatalf("second rebalance: %v, want all on a", active)
			}
			for _, p := range active["b"] {
				if slices.Contains(active["a"], p) {
					t.Fatalf("partition %d on both: %v", p, active)
				}
			}
		})
	}
}

// TestScaleOutWarmup: one node takes the load alone, then two more join,
// with a small lag bound so that the warm-up balancer has work to do. No
// partition becomes active on a node whose copy of its changelog was more
// than the lag bound behind (what each takeover had to restore is at
// most the bound, plus the commit marker that ends the last transaction),
// the joiners warm partitions up before they get them, and the move
// completes: every node ends with its share, each partition owned once,
// every message applied once.
//
// WARMUP_COMPARE=off runs the same scale-out without warm-up and only
// reports its figures (results/cluster-warmup.md).
func TestScaleOutWarmup(t *testing.T) {
	const lag = 100
	off := os.Getenv("WARMUP_COMPARE") == "off"
	var mu sync.Mutex
	var decisions []warmDecision
	obs := func(_ string, res warmupResult) {
		mu.Lock()
		decisions = append(decisions, res.Decisions...)
		mu.Unlock()
	}
	warmupObserve.Store(&obs)
	t.Cleanup(func() { warmupObserve.Store(nil) })
	c := newTestCluster(t, 16)
	c.config = func(cfg *Config) {
		cfg.WarmupLag = lag
		if off {
			cfg.WarmupLag = -1
		}
		cfg.ProbingInterval = time.Second
		cfg.StandbyInterval = 200 * time.Millisecond
	}
	c.start("a")
	c.settled(30 * time.Second)
	stop := make(chan struct{})
	res := c.load(stop, 60)
	// Enough state that the joiners start more than the bound behind on
	// most partitions: the warm-up has work to do.
	a := c.nodes["a"]
	for deadline := time.Now().Add(60 * time.Second); ; {
		pos := a.warm.positions()
		slices.Sort(pos)
		if pos[len(pos)/2] >= 3*lag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load did not write %d changelog offsets to half the partitions within a minute: %v", 3*lag, pos)
		}
		time.Sleep(100 * time.Millisecond)
	}
	settle, pz := c.joinTwoUnderLoad(stop, res, c.shares)
	c.shares(10 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	held := 0
	for _, d := range decisions {
		switch {
		case d.Kind == "hold" || d.Kind == "orphan":
			held++
		case d.Kind == "move" && d.Owner != "" && d.TargetPos < d.Best-d.Lag, d.Kind == "substitute" && d.ToPos < d.Best-d.Lag:
			t.Errorf("partition %d moved from %s to %s at position %d, best %d: beyond the lag bound", d.Partition, d.Owner, d.To, d.ToPos, d.Best)
		}
	}
	var probes uint64
	for _, name := range []string{"a", "b", "c"} {
		st := c.nodes[name].Stats()
		probes += st.WarmupProbes.Load()
		t.Logf("node %s: %d partitions, longest pause %v, %d changelog records restored in %v, largest takeover lag %d offsets, %d rebalances asked for",
			name, len(c.nodes[name].Owned()), time.Duration(st.MaxPauseNanos.Load()).Round(time.Millisecond),
			st.Restored.Load(), time.Duration(st.RestoreNanos.Load()).Round(time.Millisecond), st.MaxTakeoverLag.Load(), st.WarmupProbes.Load())
		if l := st.MaxTakeoverLag.Load(); l > lag+1 && !off {
			t.Errorf("node %s took a partition over whose copy lacked %d changelog offsets, more than the lag bound %d", name, l, lag)
		}
	}
	if off {
		t.Logf("without warm-up: 1 -> 3 nodes settled in %v under load; longest time a partition was served by no node %v, all partitions' unserved time %v",
			settle.Round(time.Millisecond), pz[0].Round(time.Millisecond), pz[1].Round(time.Millisecond))
		return
	}
	t.Logf("1 -> 3 nodes settled in %v under load; %d decisions held a partition from its target while it warmed up; longest time a partition was served by no node %v, all partitions' unserved time %v",
		settle.Round(time.Millisecond), held, pz[0].Round(time.Millisecond), pz[1].Round(time.Millisecond))
	if held == 0 {
		t.Errorf("no partition waited for its target to warm up: the test did not exercise the warm-up")
	}
	if probes == 0 {
		t.Errorf("no node asked for a rebalance (caught up, or probing)")
	}
}

// shares waits until every running node serves its share of the
// partitions (P/N or one more) and each partition is owned by exactly one
// node: the group's target, reached once warm-ups are done.
func (c *testCluster) shares(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.settled(time.Until(deadline))
		c.mu.Lock()
		ok := true
		lo := int(c.parts) / len(c.nodes)
		var got []int
		for _, n := range c.nodes {
			k := len(n.Owned())
			got = append(got, k)
			if k < lo || k > lo+1 {
				ok = false
			}
		}
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes never served their shares of %d partitions within %v: %v", c.parts, timeout, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWarmupBalancerPartitionCountMismatch: when the leader's client knows
// another partition count for the input topic than the cluster's P (its
// metadata changing), the rebalance runs as cooperative-sticky (every
// partition assigned once), instead of failing on positions it cannot
// index.
func TestWarmupBalancerPartitionCountMismatch(t *testing.T) {
	active, warm := balanceTopic(t, 4, 8, 10, []balanceMember{
		{name: "a", owned: []int32{0, 1, 2, 3}, gen: 5, pos: []int64{100, 100, 100, 100}},
		{name: "b", gen: -1, pos: []int64{0, 0, 0, 0}},
	})
	seen := map[int32]int{}
	for _, ps := range active {
		for _, p := range ps {
			seen[p]++
		}
	}
	for p, k := range seen {
		if k != 1 || p < 0 || p >= 8 {
			t.Fatalf("partition %d assigned %d times: %v", p, k, active)
		}
	}
	if len(active["b"]) == 0 || len(warm["a"])+len(warm["b"]) != 0 {
		t.Fatalf("want cooperative-sticky's plan (b gets the partitions nobody owned, nothing warms up): active %v, warm %v", active, warm)
	}
}

// TestWarmupAskBackoff: a node whose copies caught up asks for a
// rebalance at most once a second; when the rebalance it asked for moved
// nothing to it (its warm-up set did not shrink), it waits twice as long
// before asking again, up to the probing interval; progress resets the
// wait.
func TestWarmupAskBackoff(t *testing.T) {
	var w warmup
	now := time.Unix(1000, 0)
	most := 5 * time.Second
	if w.mayAsk(now) {
		t.Fatal("asked with nothing to warm up")
	}
	w.setWarm([]int32{1, 2, 3}, true, most)
	if !w.mayAsk(now) || w.mayAsk(now.Add(999*time.Millisecond)) {
		t.Fatal("want one request, then none within the second")
	}
	waits := []time.Duration{2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for _, wait := range waits {
		w.setWarm([]int32{1, 2, 3}, true, most) // the leader held them all again
		if w.mayAsk(now.Add(wait - time.Millisecond)) {
			t.Fatalf("asked again before %v", wait)
		}
		if !w.mayAsk(now.Add(wait)) {
			t.Fatalf("did not ask again after %v", wait)
		}
		now = now.Add(wait)
	}
	w.setWarm([]int32{1, 2}, true, most) // one moved here: progress
	if !w.mayAsk(now.Add(time.Second)) {
		t.Fatal("the wait was not reset by progress")
	}
	w.setWarm([]int32{1, 2}, false, most) // the group runs cooperative-sticky
	if changed := w.setWarm(nil, false, most); !changed || w.mayAsk(now.Add(time.Hour)) {
		t.Fatal("an empty warm-up set still asks")
	}
}
