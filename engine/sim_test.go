package engine

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/wal/vfs"
)

// The deterministic simulator. One seed is one run: a random workload over
// the real engine (shards' Step, effect records, the group-commit log over
// a crashable in-memory filesystem, the applier, checkpoints, recovery,
// Pebble over its crashable in-memory filesystem, remote batches through a
// simulated endpoint), driven from this one goroutine with a simulated
// clock, crashed at random points (any filesystem operation of the log or
// the store: in the middle of a group commit, a checkpoint, a Pebble
// flush, a segment rollover or retirement) and restarted with another shard
// count. At the end it drains the engine and checks the outcome against
// what the workload allows:
//
//   - every acknowledged message, and every message its invocation sent,
//     consumed exactly once (applied or dead-lettered); nothing consumed
//     twice; nothing produced by an invocation that left no record;
//   - a failing invocation (error, panic, effects over the record limit)
//     has no effect but its dead letter; a send to an unregistered type is
//     dead-lettered with its real target, the rest of the invocation kept;
//   - per-sender order per address, for function sends and for ingress;
//   - state equal to what the applied messages wrote (two values written
//     together always agree);
//   - every egress record exactly once, in its source's order;
//   - every reply goes to its own request;
//   - every delayed message without a token exactly once, none before its
//     time, tokened ones at most once;
//   - expiry of both kinds as the specs say (checked by the functions);
//   - a message sent again with its idempotency key applied once;
//   - recovery always succeeds.
//
// go test -run TestSim ./engine/ runs a fixed set of seeds; -sim.seeds=N
// (or SIM_SEEDS=N, make sim) runs N, -sim.seed=S replays one, -sim.v logs
// its steps. A failing seed prints the command that replays it.

var (
	simSeeds   = flag.Int("sim.seeds", 0, "number of simulator seeds to run (default: SIM_SEEDS, else a short fixed set)")
	simSeed    = flag.Uint64("sim.seed", 0, "run only this simulator seed")
	simFirst   = flag.Uint64("sim.first", 1, "first simulator seed")
	simVerbose = flag.Bool("sim.v", false, "log the simulator's steps")
)

// simDefaultSeeds is what a plain `go test ./engine/` runs (with the race
// detector in make test); make sim runs more, without it.
const simDefaultSeeds = 15

func TestSim(t *testing.T) {
	if *simSeed != 0 {
		runSimSeed(t, *simSeed)
		return
	}
	n := simDefaultSeeds
	if v, err := strconv.Atoi(os.Getenv("SIM_SEEDS")); err == nil && v > 0 {
		n = v
	}
	if *simSeeds > 0 {
		n = *simSeeds
	}
	if testing.Short() {
		n = min(n, 10)
	}
	start := time.Now()
	stats := simStats{}
	for i := 0; i < n; i++ {
		seed := *simFirst + uint64(i)
		st := runSimSeed(t, seed)
		stats.add(st)
		if t.Failed() {
			return
		}
		if n >= 1000 && (i+1)%1000 == 0 {
			t.Logf("%d seeds in %v", i+1, time.Since(start).Round(time.Second))
		}
	}
	t.Logf("%d seeds from %d in %v: %s", n, *simFirst, time.Since(start).Round(time.Millisecond), stats)
}

// simStats sums what the seeds exercised, so a run shows it covered
// something.
type simStats struct {
	seeds, boots, crashes, opCrashes, messages, applied, deadLetters, timers, remote, replies, keyedRetries, refused int
}

func (s *simStats) add(o simStats) {
	s.seeds++
	s.boots += o.boots
	s.crashes += o.crashes
	s.opCrashes += o.opCrashes
	s.messages += o.messages
	s.applied += o.applied
	s.deadLetters += o.deadLetters
	s.timers += o.timers
	s.remote += o.remote
	s.replies += o.replies
	s.keyedRetries += o.keyedRetries
	s.refused += o.refused
}

func (s simStats) String() string {
	return fmt.Sprintf("boots %d, crashes %d (%d inside a filesystem operation), messages %d (applied %d, dead letters %d, delayed %d, remote %d), replies %d, keyed resends %d, refused %d",
		s.boots, s.crashes, s.opCrashes, s.messages, s.applied, s.deadLetters, s.timers, s.remote, s.replies, s.keyedRetries, s.refused)
}

// ---- the workload's messages -------------------------------------------

type simOp int

const (
	opSend    simOp = iota // send child now
	opLater                // send child after delay, maybe with a token
	opCancel               // cancel a token
	opEgress               // write an egress record
	opReply                // reply to the chain's request
	opFail                 // write state, then fail
	opPanic                // write state, then panic
	opBig                  // write effects over the record limit
	opUnknown              // send child to an unregistered type
	opTTL                  // write the ExpireAfterWrite value
)

type simAct struct {
	op    simOp
	child string // tag of the child message (send, later, unknown)
	token string
	delay time.Duration
}

type simMsg struct {
	tag    string
	target Address
	prog   []simAct
	parent string // the message whose invocation sends it; "" for ingress
	root   string // the ingress message at the root of its chain
	delay  time.Duration
	token  string
	// ingress
	ingress bool
	seq     int    // push order of ingress messages
	key     string // idempotency key
	acked   bool   // an acknowledgement came back ok
	request bool
	boot    int // boot in which it was (last) pushed
}

// ---- the world -----------------------------------------------------------

type simWorld struct {
	t    testing.TB
	seed uint64
	rng  *rand.Rand
	now  int64
	boot int

	msgs   map[string]*simMsg
	order  []string // tags in creation order
	nextID int
	seq    int

	// filesystems and crash injection
	logFS     *vfs.MemFS
	storeFS   *pebblevfs.MemFS
	ops       int // filesystem operations so far (mutating ones)
	crashAt   int // crash before this operation (0: none scheduled)
	crashed   bool
	snapLog   *vfs.MemFS
	snapStore *pebblevfs.MemFS

	action     string
	gen        int // bumped when an engine is abandoned: its filesystem hooks go quiet
	e          *Engine
	opts       Options
	accts      []Address
	remote     []Address
	acks       map[string]*format.Ack // pending acks of this boot by tag
	reqs       map[uint64]simReq      // requests of this boot
	calls      []*simCall             // remote calls in flight
	violations []string
	stats      simStats
	log        []string
}

type simReq struct {
	root string
	ch   chan Message
}

type simCall struct {
	b    *RemoteBatch
	done func(*RemoteResult)
	fate int // 0 ok, 1 missing specs, 2 fail for good, 3 stall
	boot int
}

func (w *simWorld) logf(format string, args ...any) {
	if *simVerbose {
		w.t.Logf("[%d] t=%dms "+format, append([]any{w.boot, w.now / 1e6}, args...)...)
	}
	if len(w.log) < 4000 {
		w.log = append(w.log, fmt.Sprintf("[%d] t=%dms "+format, append([]any{w.boot, w.now / 1e6}, args...)...))
	}
}

func (w *simWorld) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed %d: %s\nreplay: go test -run 'TestSim$' ./engine/ -sim.seed=%d -sim.v", w.seed, fmt.Sprintf(format, args...), w.seed)
}

// State specs of the simulated functions.
var (
	simLogSpec   = ValueSpec{Name: "log", Type: TypeBytes}
	simNSpec     = ValueSpec{Name: "n", Type: TypeLong}
	simTTLSpec   = ValueSpec{Name: "ttl", Type: TypeBytes, Mode: ExpireAfterWrite, Expiry: 300 * time.Millisecond}
	simTTLWSpec  = ValueSpec{Name: "ttlw", Type: TypeBytes}
	simTouchSpec = ValueSpec{Name: "touch", Type: TypeBytes, Mode: ExpireAfterInvoke, Expiry: 200 * time.Millisecond}
	simLastSpec  = ValueSpec{Name: "last", Type: TypeBytes}
	simBigSpec   = ValueSpec{Name: "big", Type: TypeBytes}
	simBig2Spec  = ValueSpec{Name: "big2", Type: TypeBytes}
	simSetSpec   = MapSpec{Name: "set"} // every applied tag, entry by entry
)

const simEgress = "sim-out"
