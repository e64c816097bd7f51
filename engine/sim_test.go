package engine

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

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

// ---- functions -----------------------------------------------------------

// acctFunc is the embedded function: it appends "tag@ms#boot" to its log,
// counts, and runs the message's program.
func (w *simWorld) acctFunc() FunctionSpec {
	return FunctionSpec{Namespace: "sim", Type: "acct",
		States: []ValueSpec{simLogSpec, simNSpec, simTTLSpec, simTTLWSpec, simTouchSpec, simLastSpec, simBigSpec, simBig2Spec},
		Maps:   []MapSpec{simSetSpec},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			m := w.msgs[string(msg.Value)]
			if m == nil {
				w.violations = append(w.violations, fmt.Sprintf("unknown message %q at %s", msg.Value, ctx.Self()))
				return nil
			}
			now := ctx.Now().UnixNano()
			w.checkExpiry(ctx, now)
			log, _ := ctx.Get(simLogSpec)
			n, _, err := ctx.GetInt64(simNSpec)
			if err != nil {
				return err
			}
			entry := fmt.Sprintf("%s@%d#%d;", m.tag, now, w.boot)
			if err := ctx.Set(simLogSpec, append(append([]byte(nil), log...), entry...)); err != nil {
				return err
			}
			if err := ctx.SetInt64(simNSpec, n+1); err != nil {
				return err
			}
			if _, dup, err := ctx.MapGet(simSetSpec, m.tag); err != nil || dup {
				w.violations = append(w.violations, fmt.Sprintf("%s: the map already holds %s (%v)", ctx.Self(), m.tag, err))
			}
			if err := ctx.MapSet(simSetSpec, m.tag, []byte(strconv.FormatInt(now, 10))); err != nil {
				return err
			}
			if len(log) > 0 && w.rng.IntN(8) == 0 {
				// The map agrees with the log before this invocation.
				if n2, err := ctx.MapLen(simSetSpec); err != nil || int64(n2) != n+1 {
					w.violations = append(w.violations, fmt.Sprintf("%s: the map has %d entries with this invocation's, the log %d (%v)", ctx.Self(), n2, n+1, err))
				}
			}
			return w.runProg(ctx, m, now)
		})}
}

// checkExpiry checks the expiry of both kinds against the times the
// function itself recorded in values that do not expire.
func (w *simWorld) checkExpiry(ctx Context, now int64) {
	self := ctx.Self().String()
	ttl, ttlOK := ctx.Get(simTTLSpec)
	ttlw, ttlwOK := ctx.Get(simTTLWSpec)
	if ttlOK {
		at, _ := strconv.ParseInt(string(ttl), 10, 64)
		if now-at >= int64(simTTLSpec.Expiry) {
			w.violations = append(w.violations, fmt.Sprintf("%s: ttl written at %d still present at %d (expires after %v)", self, at, now, simTTLSpec.Expiry))
		}
	} else if ttlwOK {
		at, _ := strconv.ParseInt(string(ttlw), 10, 64)
		if now-at < int64(simTTLSpec.Expiry) {
			w.violations = append(w.violations, fmt.Sprintf("%s: ttl written at %d gone at %d (expires after %v)", self, at, now, simTTLSpec.Expiry))
		}
	}
	touch, touchOK := ctx.Get(simTouchSpec)
	last, lastOK := ctx.Get(simLastSpec)
	if lastOK {
		prev, _ := strconv.ParseInt(string(last), 10, 64)
		want := now-prev < int64(simTouchSpec.Expiry)
		if touchOK != want {
			w.violations = append(w.violations, fmt.Sprintf("%s: touch present=%v at %d, last invocation at %d (expires %v after invoke)", self, touchOK, now, prev, simTouchSpec.Expiry))
		}
	} else if touchOK {
		w.violations = append(w.violations, fmt.Sprintf("%s: touch present before any invocation recorded", self))
	}
	_ = touch
	nowS := []byte(strconv.FormatInt(now, 10))
	_ = ctx.Set(simTouchSpec, nowS)
	_ = ctx.Set(simLastSpec, nowS)
}

func (w *simWorld) runProg(ctx Context, m *simMsg, now int64) error {
	for _, a := range m.prog {
		switch a.op {
		case opSend:
			c := w.msgs[a.child]
			ctx.Send(c.target, Message{Type: "sim", Value: []byte(c.tag)})
		case opLater:
			c := w.msgs[a.child]
			ctx.SendAfter(a.delay, c.target, Message{Type: "sim", Value: []byte(c.tag)}, a.token)
		case opCancel:
			ctx.Cancel(a.token)
		case opEgress:
			ctx.Egress(simEgress, Message{Type: "sim", Value: []byte(m.tag)})
		case opReply:
			ctx.Reply(Message{Type: "sim-reply", Value: []byte(m.root)})
		case opUnknown:
			c := w.msgs[a.child]
			ctx.Send(c.target, Message{Type: "sim", Value: []byte(c.tag)})
		case opTTL:
			v := []byte(strconv.FormatInt(now, 10))
			if err := ctx.Set(simTTLSpec, v); err != nil {
				return err
			}
			if err := ctx.Set(simTTLWSpec, v); err != nil {
				return err
			}
		case opFail:
			return fmt.Errorf("scripted failure of %s", m.tag)
		case opPanic:
			panic("scripted panic of " + m.tag)
		case opBig:
			big := make([]byte, w.opts.MaxStateBytes)
			if err := ctx.Set(simBigSpec, big); err != nil {
				return err
			}
			if err := ctx.Set(simBig2Spec, big); err != nil {
				return err
			}
		}
	}
	return nil
}

// remoteFunc is the simulated remote endpoint: calls wait in w.calls until
// the simulation completes them with a fate drawn when they started.
func (w *simWorld) remoteFunc() FunctionSpec {
	return FunctionSpec{Namespace: "sim", Type: "remote", States: []ValueSpec{simLogSpec, simNSpec},
		Remote: simRemote{w}}
}

type simRemote struct{ w *simWorld }

func (r simRemote) InvokeBatch(b *RemoteBatch, done func(*RemoteResult)) {
	w := r.w
	fate := 0
	switch p := w.rng.IntN(100); {
	case p < 8:
		fate = 1
	case p < 14:
		fate = 2
	case p < 30:
		fate = 3
	}
	w.calls = append(w.calls, &simCall{b: b, done: done, fate: fate, boot: w.boot})
	w.stats.remote += len(b.Invocations)
}

// completeCall finishes a remote call as its fate says.
func (w *simWorld) completeCall(c *simCall) {
	switch c.fate {
	case 1:
		c.fate = 0 // asks once for specs it already has, then succeeds
		c.done(&RemoteResult{MissingSpecs: []ValueSpec{simLogSpec}})
		return
	case 2:
		c.done(&RemoteResult{Err: errors.New("simulated endpoint answered 400")})
		return
	}
	var log []byte
	var n int64
	for _, s := range c.b.States {
		switch s.Spec.Name {
		case "log":
			if s.Present {
				log = append([]byte(nil), s.Value...)
			}
		case "n":
			if s.Present {
				n, _ = DecodeLongWrapper(s.Value)
			}
		}
	}
	res := &RemoteResult{}
	for _, inv := range c.b.Invocations {
		m := w.msgs[string(inv.Message.Value)]
		log = append(log, fmt.Sprintf("%s@%d#%d;", m.tag, w.now, w.boot)...)
		n++
		for _, a := range m.prog {
			cm := w.msgs[a.child]
			switch a.op {
			case opSend, opUnknown:
				res.Sends = append(res.Sends, Outgoing{To: cm.target, Message: Message{Type: "sim", Value: []byte(cm.tag)}})
			case opLater:
				res.Delayed = append(res.Delayed, DelayedSend{To: cm.target, Message: Message{Type: "sim", Value: []byte(cm.tag)}, Delay: a.delay, Token: a.token})
			case opCancel:
				res.Cancels = append(res.Cancels, a.token)
			case opEgress:
				res.Egress = append(res.Egress, EgressOut{Name: simEgress, Message: Message{Type: "sim", Value: []byte(m.tag)}})
			case opReply:
				res.Sends = append(res.Sends, Outgoing{To: Address{Namespace: ReplyNamespace, Type: ReplyType, ID: "x"}, Message: Message{Type: "sim-reply", Value: []byte(m.root)}})
			}
		}
	}
	res.Mutations = []StateMutation{
		{Name: "log", Value: Message{Type: TypeBytes, Value: log}},
		{Name: "n", Value: Int64(n)},
	}
	c.done(res)
}

// ---- filesystems with crash points -------------------------------------

// crashHook is called before every mutating filesystem operation of the
// log and of the store; at the scheduled count it takes the crash images
// (what a power loss at that instant would leave) and the world switches
// to them after the current step.
func (w *simWorld) crashHook() {
	w.ops++
	if w.crashAt != 0 && w.ops == w.crashAt && !w.crashed {
		w.takeCrashImage()
		w.stats.opCrashes++
	}
}

func (w *simWorld) takeCrashImage() {
	if w.e != nil {
		w.logf("crash image at filesystem operation %d (durable %d) during %s", w.ops, w.e.wal.Durable(), w.action)
	} else {
		w.logf("crash image at filesystem operation %d during recovery", w.ops)
	}
	// What was acknowledged before this instant counts; nothing after.
	w.collectAcks()
	w.crashed = true
	// The log's image keeps a random share of what was not synced, sector
	// by sector (torn writes). The store's keeps exactly what was synced:
	// Pebble's clone draws unsynced directory entries in map order (a
	// replay would differ) and independently of their order, which no
	// filesystem promises either way.
	w.snapLog = w.logFS.CrashClone(w.rng)
	w.snapStore = w.storeFS.CrashClone(pebblevfs.CrashCloneCfg{})
}

// hookFS wraps the log's MemFS with the crash hook.
type hookFS struct {
	fs   vfs.FS
	hook func()
}

func (h hookFS) Create(name string) (vfs.File, error) {
	h.hook()
	f, err := h.fs.Create(name)
	return hookFile{f, h.hook}, err
}
func (h hookFS) Open(name string) (vfs.File, error) {
	f, err := h.fs.Open(name)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}
func (h hookFS) OpenReadWrite(name string) (vfs.File, error) {
	f, err := h.fs.OpenReadWrite(name)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}
func (h hookFS) Remove(name string) error             { h.hook(); return h.fs.Remove(name) }
func (h hookFS) Rename(oldname, newname string) error { h.hook(); return h.fs.Rename(oldname, newname) }
func (h hookFS) MkdirAll(dir string) error            { return h.fs.MkdirAll(dir) }
func (h hookFS) List(dir string) ([]string, error)    { return h.fs.List(dir) }
func (h hookFS) OpenDir(dir string) (vfs.File, error) {
	f, err := h.fs.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return hookFile{f, h.hook}, nil
}

type hookFile struct {
	vfs.File
	hook func()
}

func (f hookFile) Write(p []byte) (int, error) { f.hook(); return f.File.Write(p) }
func (f hookFile) WriteAt(p []byte, off int64) (int, error) {
	f.hook()
	return f.File.WriteAt(p, off)
}
func (f hookFile) Sync() error                  { f.hook(); return f.File.Sync() }
func (f hookFile) Truncate(size int64) error    { f.hook(); return f.File.Truncate(size) }
func (f hookFile) Preallocate(o, n int64) error { f.hook(); return f.File.Preallocate(o, n) }
func (f hookFile) Unlinked() (bool, error)      { return vfs.IsUnlinked(f.File) }

// storeInjector counts the store's mutating operations (removals aside:
// Pebble deletes obsolete files from a background goroutine, whose timing
// must not move the crash points).
type storeInjector struct{ hook func() }

func (s storeInjector) String() string { return "sim crash points" }
func (s storeInjector) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpRemove, errorfs.OpRemoveAll, errorfs.OpFileClose:
		return nil
	}
	if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		s.hook()
	}
	return nil
}

// ---- running a seed ------------------------------------------------------

func runSimSeed(t testing.TB, seed uint64) simStats {
	w := &simWorld{
		t:       t,
		seed:    seed,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:     time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano(),
		msgs:    map[string]*simMsg{},
		logFS:   vfs.NewMemFS(),
		storeFS: pebblevfs.NewCrashableMem(),
	}
	w.setup()
	w.open()
	steps := 150 + w.rng.IntN(350)
	for i := 0; i < steps; i++ {
		w.step()
		if w.crashed {
			w.restart()
		}
	}
	w.drain()
	w.check()
	// A clean restart keeps exactly what was there.
	before := w.snapshotState()
	if err := w.e.Close(); err != nil {
		w.fail("close: %v", err)
	}
	w.gen++
	w.e = nil
	w.open()
	w.drain()
	if after := w.snapshotState(); after != before {
		w.fail("a clean restart changed the state:\nbefore %s\nafter  %s", before, after)
	}
	w.gen++
	w.e.abandon()
	return w.stats
}

// setup draws the seed's configuration.
func (w *simWorld) setup() {
	r := w.rng
	for i := 0; i < 3+r.IntN(8); i++ {
		w.accts = append(w.accts, Address{Namespace: "sim", Type: "acct", ID: fmt.Sprintf("a%d", i)})
	}
	if r.IntN(3) > 0 {
		for i := 0; i < 1+r.IntN(3); i++ {
			w.remote = append(w.remote, Address{Namespace: "sim", Type: "remote", ID: fmt.Sprintf("r%d", i)})
		}
	}
	seg := int64([]int{64 << 10, 128 << 10, 1 << 20}[r.IntN(3)])
	w.opts = Options{
		DataDir:              "/data",
		SegmentSize:          seg,
		MaxRecordBytes:       int(seg - segmentOverhead),
		MaxStateBytes:        int(seg-segmentOverhead) * 2 / 3,
		MaxMessageBytes:      4 << 10,
		MemoryBudget:         []int64{1 << 20, 8 << 20}[r.IntN(2)] * 4,
		MailboxCapacity:      []int{8, 64, 1024}[r.IntN(3)],
		IdempotencyRetention: time.Hour,
		Clock:                func() time.Time { return time.Unix(0, w.now) },
		Logger:               quiet,
		manual:               true,
	}
	if r.IntN(3) == 0 {
		w.opts.MemoryBudget = 64 << 10 * 4 // eviction under a tiny cache
	}
	if r.IntN(4) == 0 {
		// Pressure: ingress refused for queued bytes or applier lag.
		w.opts.MaxQueuedBytes = int64(8+r.IntN(64)) << 10
		w.opts.MaxApplierLag = int64(4+r.IntN(64)) << 10
	}
}

// open opens the engine on the current filesystems (after a crash, on the
// crash images) with a random shard count.
func (w *simWorld) open() {
	w.boot++
	w.stats.boots++
	if w.snapLog != nil {
		w.logFS, w.storeFS = w.snapLog, w.snapStore
		w.snapLog, w.snapStore = nil, nil
	}
	w.crashed = false
	w.crashAt = 0
	w.acks = map[string]*format.Ack{}
	w.reqs = map[uint64]simReq{}
	o := w.opts
	o.Shards = 1 + w.rng.IntN(4)
	o.MemoryBudget = max(o.MemoryBudget, int64(o.Shards)*64<<10)
	gen := w.gen
	hook := func() {
		if w.gen == gen {
			w.crashHook()
		}
	}
	o.FS = FS{Log: hookFS{fs: w.logFS, hook: hook}, Store: errorfs.Wrap(w.storeFS, storeInjector{hook})}
	if w.rng.IntN(4) == 0 {
		// A crash during recovery itself.
		w.crashAt = w.ops + 1 + w.rng.IntN(40)
	}
	e, err := Open(o, w.acctFunc(), w.remoteFunc())
	if err != nil {
		w.fail("recovery failed (boot %d, %d shards): %v", w.boot, o.Shards, err)
	}
	w.e = e
	e.beforeCheckpoint = func() {
		if w.rng.IntN(2) == 0 && !w.crashed {
			_ = e.flushLog()
		}
	}
	w.acks = map[string]*format.Ack{}
	w.reqs = map[uint64]simReq{}
	w.calls = nil
	w.logf("open: %d shards, recovered %+v", o.Shards, e.Recovery())
	if w.crashed {
		w.restart()
		return
	}
	if w.rng.IntN(3) == 0 {
		w.crashAt = w.ops + 1 + w.rng.IntN(300)
	}
}

// restart abandons the crashed engine and recovers from the crash images.
func (w *simWorld) restart() {
	w.stats.crashes++
	w.logf("restart after the crash (%d filesystem operations so far)", w.ops)
	w.gen++
	w.e.abandon()
	w.e = nil
	w.open()
}

// collectAcks records the acknowledgements released so far (they count:
// what they acknowledge is in the crash image). After a crash image is
// taken the engine is dead: what it still releases does not count.
func (w *simWorld) collectAcks() {
	if w.crashed {
		return
	}
	for tag, a := range w.acks {
		select {
		case <-a.Done():
			if a.Err() == nil {
				w.msgs[tag].acked = true
				w.logf("acked %s", tag)
			}
			delete(w.acks, tag)
		default:
		}
	}
}

// step does one random thing.
func (w *simWorld) step() {
	r := w.rng
	p := r.IntN(100)
	w.action = fmt.Sprint("step ", p)
	switch {
	case p < 22:
		w.ingress()
	case p < 50:
		s := w.e.shards[r.IntN(len(w.e.shards))]
		s.Step(w.now)
	case p < 60:
		for _, s := range w.e.shards {
			s.Step(w.now)
		}
	case p < 72:
		if err := w.e.flushLog(); err != nil && !w.crashed {
			w.fail("flush: %v", err)
		}
	case p < 80:
		if err := w.e.applyOnce(false); err != nil && !w.crashed {
			w.fail("apply: %v", err)
		}
	case p < 83:
		w.logf("checkpoint")
		if err := w.e.applyOnce(true); err != nil && !w.crashed {
			w.fail("checkpoint: %v", err)
		}
	case p < 90:
		w.now += int64(r.IntN(50_000)) * int64(time.Microsecond)
	case p < 96:
		w.remoteStep()
	case p < 97:
		if !w.crashed {
			w.logf("crash between steps")
			w.takeCrashImage()
		}
	default:
		w.resendKeyed()
	}
	w.collectAcks()
	w.pollReplies()
}

func (w *simWorld) remoteStep() {
	if len(w.calls) == 0 {
		return
	}
	i := w.rng.IntN(len(w.calls))
	c := w.calls[i]
	if c.fate == 3 && w.rng.IntN(4) > 0 {
		return // stalled
	}
	w.calls = append(w.calls[:i], w.calls[i+1:]...)
	if c.fate == 3 {
		c.fate = 0
	}
	w.completeCall(c)
}

func (w *simWorld) newMsg(target Address, parent *simMsg) *simMsg {
	w.nextID++
	m := &simMsg{tag: fmt.Sprintf("m%d", w.nextID), target: target}
	if parent != nil {
		m.parent, m.root = parent.tag, parent.root
	} else {
		m.root = m.tag
	}
	w.msgs[m.tag] = m
	w.order = append(w.order, m.tag)
	w.stats.messages++
	return m
}

func (w *simWorld) randomTarget() Address {
	if len(w.remote) > 0 && w.rng.IntN(4) == 0 {
		return w.remote[w.rng.IntN(len(w.remote))]
	}
	return w.accts[w.rng.IntN(len(w.accts))]
}

// genProg draws what message m does.
func (w *simWorld) genProg(m *simMsg, depth int) {
	r := w.rng
	remote := m.target.Type == "remote"
	for i, n := 0, r.IntN(4); i < n; i++ {
		p := r.IntN(100)
		switch {
		case p < 30 && depth < 3:
			c := w.newMsg(w.randomTarget(), m)
			w.genProg(c, depth+1)
			m.prog = append(m.prog, simAct{op: opSend, child: c.tag})
		case p < 42 && depth < 3:
			c := w.newMsg(w.randomTarget(), m)
			c.delay = time.Duration(1+r.IntN(800)) * time.Millisecond
			if r.IntN(2) == 0 {
				c.token = []string{"t1", "t2"}[r.IntN(2)]
			}
			w.genProg(c, depth+1)
			m.prog = append(m.prog, simAct{op: opLater, child: c.tag, delay: c.delay, token: c.token})
			w.stats.timers++
		case p < 47:
			m.prog = append(m.prog, simAct{op: opCancel, token: []string{"t1", "t2"}[r.IntN(2)]})
		case p < 60:
			m.prog = append(m.prog, simAct{op: opEgress})
		case p < 68:
			m.prog = append(m.prog, simAct{op: opReply})
		case p < 71 && !remote:
			m.prog = append(m.prog, simAct{op: opFail})
		case p < 73 && !remote:
			m.prog = append(m.prog, simAct{op: opPanic})
		case p < 75 && !remote:
			m.prog = append(m.prog, simAct{op: opBig})
		case p < 79:
			c := w.newMsg(Address{Namespace: "sim", Type: "nope", ID: "x"}, m)
			m.prog = append(m.prog, simAct{op: opUnknown, child: c.tag})
		case p < 88 && !remote:
			m.prog = append(m.prog, simAct{op: opTTL})
		}
	}
}

// ingress sends a new message (maybe keyed, maybe a request, maybe a batch).
func (w *simWorld) ingress() {
	r := w.rng
	n := 1
	if r.IntN(5) == 0 {
		n = 2 + r.IntN(6)
	}
	var batch []*simMsg
	for i := 0; i < n; i++ {
		m := w.newMsg(w.randomTarget(), nil)
		m.ingress = true
		w.genProg(m, 0)
		if r.IntN(3) == 0 {
			m.key = "k-" + m.tag
		}
		batch = append(batch, m)
	}
	if n == 1 && batch[0].key == "" && r.IntN(3) == 0 {
		w.request(batch[0])
		return
	}
	w.push(batch)
}

// push admits messages like SendBatch does, without waiting.
func (w *simWorld) push(batch []*simMsg) {
	e := w.e
	out := make([]Outgoing, len(batch))
	for i, m := range batch {
		out[i] = Outgoing{To: m.target, Message: Message{Type: "sim", Value: []byte(m.tag)}, Key: m.key}
	}
	if err := e.enter(); err != nil {
		w.fail("enter: %v", err)
	}
	b := batchAdmission{e: e}
	err := b.admit(out)
	e.inflight.Done()
	if err != nil {
		if !errors.Is(err, ErrOverloaded) {
			w.fail("admit: %v", err)
		}
		w.stats.refused += len(batch)
		w.logf("refused %d: %v", len(batch), err)
		return
	}
	for _, m := range batch {
		w.seq++
		m.seq, m.boot = w.seq, w.boot
		if b.ack != nil {
			w.acks[m.tag] = b.ack
		}
	}
	// keyed messages known already are acknowledged at once
	if b.ack == nil {
		for _, m := range batch {
			m.acked = m.acked || len(b.waitFor) == 0
		}
	}
	w.logf("pushed %d: %s", len(batch), tags(batch))
}

func tags(ms []*simMsg) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.tag+"→"+m.target.String())
	}
	return strings.Join(s, " ")
}

// request sends m as a request whose chain may reply.
func (w *simWorld) request(m *simMsg) {
	m.request = true
	id, ch, ack, err := w.e.startRequest(m.target, Message{Type: "sim", Value: []byte(m.tag)})
	if err != nil {
		if !errors.Is(err, ErrOverloaded) {
			w.fail("request: %v", err)
		}
		w.stats.refused++
		return
	}
	w.seq++
	m.seq, m.boot = w.seq, w.boot
	w.acks[m.tag] = ack
	w.reqs[id] = simReq{root: m.tag, ch: ch}
	w.logf("request %s → %s (id %d)", m.tag, m.target, id)
}

// resendKeyed sends a keyed ingress message again (a client that did not
// hear the answer).
func (w *simWorld) resendKeyed() {
	var keyed []*simMsg
	for _, tag := range w.order {
		if m := w.msgs[tag]; m.key != "" && m.seq != 0 {
			keyed = append(keyed, m)
		}
	}
	if len(keyed) == 0 {
		return
	}
	m := keyed[w.rng.IntN(len(keyed))]
	w.stats.keyedRetries++
	w.logf("resend %s (key %s)", m.tag, m.key)
	w.push([]*simMsg{m})
}

func (w *simWorld) pollReplies() {
	for id, rq := range w.reqs {
		select {
		case r, ok := <-rq.ch:
			if !ok {
				delete(w.reqs, id)
				continue
			}
			w.stats.replies++
			if string(r.Value) != rq.root {
				w.fail("request %d (%s) received the reply %q of another chain", id, rq.root, r.Value)
			}
			delete(w.reqs, id)
		default:
		}
	}
}

// drain runs the engine until nothing is left to do: remote calls
// complete, timers fire, everything is applied and checkpointed.
func (w *simWorld) drain() {
	for round := 0; round < 3000; round++ {
		for len(w.calls) > 0 {
			c := w.calls[0]
			w.calls = w.calls[1:]
			if c.fate == 3 {
				c.fate = 0
			}
			w.completeCall(c)
		}
		worked := false
		for k := 0; k < 50; k++ {
			any := false
			for _, s := range w.e.shards {
				if s.Step(w.now) {
					any = true
				}
			}
			if err := w.e.flushLog(); err != nil && !w.crashed {
				w.fail("flush: %v", err)
			}
			if !any || w.crashed {
				break
			}
			worked = true
		}
		if w.crashed {
			w.restart()
			continue
		}
		if err := w.e.applyOnce(round%10 == 0); err != nil && !w.crashed {
			w.fail("apply: %v", err)
		}
		w.collectAcks()
		w.pollReplies()
		if w.crashed {
			w.restart()
			continue
		}
		timers := int64(0)
		for _, s := range w.e.shards {
			timers += s.Stats().Timers
		}
		if !worked && len(w.calls) == 0 && timers == 0 && w.e.quiescent() {
			for i, s := range w.e.shards {
				if q := s.QueuedBytes(); q != 0 {
					w.fail("shard %d counts %d queued bytes with nothing queued", i, q)
				}
				if b := s.Mailbox().SharedBytes(); b != 0 {
					w.fail("shard %d's mailbox counts %d bytes with nothing in it", i, b)
				}
			}
			w.crashAt = 0 // no crash from here on: the checks read this engine
			if err := w.e.applyOnce(true); err != nil {
				w.fail("checkpoint: %v", err)
			}
			return
		}
		w.now += int64(20 * time.Millisecond)
	}
	w.fail("the engine did not drain")
}

// ---- checking --------------------------------------------------------------

type simApplied struct {
	at   string // address
	pos  int    // position in the address's log
	ns   int64  // the invocation's time
	boot int
}

// snapshotState renders every instance's state and the egress logs.
func (w *simWorld) snapshotState() string {
	var b strings.Builder
	ctx := context.Background()
	for _, a := range append(append([]Address(nil), w.accts...), w.remote...) {
		vals, err := w.e.State(ctx, a)
		if err != nil {
			w.fail("state of %s: %v", a, err)
		}
		fmt.Fprintf(&b, "%s:", a)
		for _, v := range vals {
			if v.Spec.Name == "log" || v.Spec.Name == "n" {
				fmt.Fprintf(&b, " %s=%q", v.Spec.Name, v.Value)
			}
		}
		b.WriteString("\n")
	}
	for _, name := range []string{simEgress, "dead-letters"} {
		recs := w.readEgress(name)
		fmt.Fprintf(&b, "%s: %d records\n", name, len(recs))
	}
	return b.String()
}

func (w *simWorld) readEgress(name string) []EgressRecord {
	var all []EgressRecord
	for from := uint64(0); ; {
		recs, err := w.e.ReadEgress(context.Background(), name, from, 10000, 0, 0)
		if err != nil {
			w.fail("read egress %s: %v", name, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		from = recs[len(recs)-1].Offset + 1
	}
}

func (w *simWorld) check() {
	if len(w.violations) > 0 {
		w.fail("functions saw: %s", strings.Join(w.violations, "; "))
	}
	ctx := context.Background()
	applied := map[string][]simApplied{}
	logs := map[string][]string{}
	for _, a := range append(append([]Address(nil), w.accts...), w.remote...) {
		vals, err := w.e.State(ctx, a)
		if err != nil {
			w.fail("state of %s: %v", a, err)
		}
		var log []byte
		var n int64
		for _, v := range vals {
			switch v.Spec.Name {
			case "log":
				log = v.Value
			case "n":
				n, _ = DecodeLongWrapper(v.Value)
			case "big", "big2":
				if v.Present {
					w.fail("%s holds the value of an invocation over the record limit", a)
				}
			}
		}
		entries := strings.Split(strings.TrimSuffix(string(log), ";"), ";")
		if len(log) == 0 {
			entries = nil
		}
		if a.Type == "acct" {
			w.checkSet(a, vals, entries)
		}
		if int64(len(entries)) != n {
			w.fail("%s: n=%d but the log has %d entries (two values written together disagree)", a, n, len(entries))
		}
		for i, en := range entries {
			tag, rest, _ := strings.Cut(en, "@")
			msS, bootS, _ := strings.Cut(rest, "#")
			ms, _ := strconv.ParseInt(msS, 10, 64)
			boot, _ := strconv.Atoi(bootS)
			applied[tag] = append(applied[tag], simApplied{at: a.String(), pos: i, ns: ms, boot: boot})
			logs[a.String()] = append(logs[a.String()], tag)
			if m := w.msgs[tag]; m == nil || m.target != a {
				w.fail("%s applied %s, which is not addressed to it", a, tag)
			}
		}
	}
	dead := map[string]int{}
	deadTarget := map[string]string{}
	for _, r := range w.readEgress("dead-letters") {
		var dl struct {
			Target, Caller, Type, Error string
			PayloadB64                  []byte `json:"payload_b64"`
		}
		if err := json.Unmarshal(r.Message.Value, &dl); err != nil {
			w.fail("dead letter %d: %v", r.Offset, err)
		}
		tag := string(dl.PayloadB64)
		dead[tag]++
		deadTarget[tag] = dl.Target
	}
	egress := map[string]int{}
	egressBySource := map[string][]string{}
	for _, r := range w.readEgress(simEgress) {
		tag := string(r.Message.Value)
		egress[tag]++
		egressBySource[r.Source.String()] = append(egressBySource[r.Source.String()], tag)
	}
	consumed := func(tag string) int { return len(applied[tag]) + dead[tag] }
	isApplied := func(tag string) bool { return len(applied[tag]) == 1 }
	w.stats.deadLetters += len(dead)
	for _, tag := range w.order {
		m := w.msgs[tag]
		c := consumed(tag)
		if c > 1 {
			w.fail("%s consumed %d times (applied %v, dead-lettered %d)", tag, c, applied[tag], dead[tag])
		}
		if c == 1 && isApplied(tag) {
			w.stats.applied++
		}
		var parent *simMsg
		if m.parent != "" {
			parent = w.msgs[m.parent]
		}
		required := false
		switch {
		case m.ingress:
			required = m.acked
			if m.seq == 0 && c > 0 {
				w.fail("%s was refused at ingress but consumed", tag)
			}
		case parent != nil && isApplied(parent.tag):
			required = true
			if m.delay > 0 && m.token != "" {
				switch w.tokenFate(m, parent, applied, logs) {
				case fateCancelled:
					required = false
					if c != 0 {
						w.fail("%s (token %s) was delivered after its sender replaced or cancelled it: %v", tag, m.token, applied[tag])
					}
				case fateUnknown:
					required = false
				}
			}
		case parent != nil:
			if c > 0 {
				w.fail("%s was consumed but its sender %s left no effect (applied %v, dead %d)", tag, parent.tag, applied[parent.tag], dead[parent.tag])
			}
		}
		if required && c != 1 {
			w.fail("%s (to %s, parent %q, ingress %v) consumed %d times, want once", tag, m.target, m.parent, m.ingress, c)
		}
		if m.target.Type == "nope" && isApplied(tag) {
			w.fail("%s to an unregistered type was applied", tag)
		}
		if dead[tag] == 1 {
			want := m.target.String()
			if deadTarget[tag] != want {
				w.fail("dead letter of %s names target %q, want %q", tag, deadTarget[tag], want)
			}
			if m.target.Type == "acct" && !failing(m) {
				w.fail("%s was dead-lettered but its program does not fail", tag)
			}
		}
		if isApplied(tag) && m.target.Type == "acct" && failing(m) {
			w.fail("%s fails, yet it was applied", tag)
		}
		if m.delay > 0 && isApplied(tag) && parent != nil && isApplied(parent.tag) {
			at := applied[tag][0].ns
			sentAt := applied[parent.tag][0].ns
			if at < sentAt+int64(m.delay) {
				w.fail("delayed %s delivered at %d, sent at %d with delay %v", tag, at, sentAt, m.delay)
			}
		}
		// egress exactly once for applied messages with an egress act
		wantEgress := 0
		if isApplied(tag) {
			for _, a := range m.prog {
				if a.op == opEgress {
					wantEgress++
				}
			}
		}
		if egress[tag] != wantEgress {
			w.fail("%s has %d egress records, want %d (applied %v)", tag, egress[tag], wantEgress, applied[tag])
		}
	}
	// Egress in each source's order.
	for src, tagsOut := range egressBySource {
		last := -1
		for _, tag := range tagsOut {
			p := slices.Index(logs[src], tag)
			if p < last { // one message may write several records

				w.fail("egress of %s out of order: %v against its log %v", src, tagsOut, logs[src])
			}
			last = p
		}
	}
	w.checkOrder(applied)
}

type tokenFate int

const (
	fateDue       tokenFate = iota // must be delivered exactly once
	fateCancelled                  // replaced or cancelled before it fired: never delivered
	fateUnknown                    // the model cannot tell (a remote sender)
)

// tokenFate decides what happens to delayed message m with a token, sent by
// parent's invocation: a later operation on the token in the same program
// replaces or cancels it at once; a later invocation of the sender that
// touches the token (cancel, or a delayed send with it) at a time before m
// fires cancels it (a shard fires due timers before it runs invocations, so
// a touch at or after the fire time comes too late). A remote sender's
// sends and cancels reach the engine unordered within a batch, so the model
// only bounds them (at most once).
func (w *simWorld) tokenFate(m, parent *simMsg, applied map[string][]simApplied, logs map[string][]string) tokenFate {
	if parent.target.Type == "remote" {
		return fateUnknown
	}
	seen := false
	for _, a := range parent.prog {
		if a.child == m.tag {
			seen = true
			continue
		}
		if seen && a.token == m.token && (a.op == opCancel || a.op == opLater) {
			return fateCancelled
		}
	}
	sent := applied[parent.tag][0]
	fireAt := sent.ns + int64(m.delay)
	sender := parent.target.String()
	for _, tag := range logs[sender][sent.pos+1:] {
		at := applied[tag][0].ns
		if at >= fireAt {
			break
		}
		for _, a := range w.msgs[tag].prog {
			if a.token == m.token && (a.op == opCancel || a.op == opLater) {
				if failing(w.msgs[tag]) {
					continue // its effects were discarded
				}
				return fateCancelled
			}
		}
	}
	return fateDue
}

// checkSet checks that an instance's map state holds exactly the tags of
// its log (written together, entry by entry).
func (w *simWorld) checkSet(a Address, vals []StateValue, entries []string) {
	for _, v := range vals {
		if v.Spec.Name != simSetSpec.Name {
			continue
		}
		if v.MapLen != len(entries) {
			w.fail("%s: the map holds %d entries, the log %d", a, v.MapLen, len(entries))
		}
		inLog := map[string]bool{}
		for _, en := range entries {
			tag, _, _ := strings.Cut(en, "@")
			inLog[tag] = true
		}
		for _, en := range v.Map {
			if !inLog[en.Key] {
				w.fail("%s: the map holds %s, which the log does not", a, en.Key)
			}
		}
		return
	}
	w.fail("%s: State did not list the map", a)
}

// failing reports whether an embedded invocation of m must fail.
func failing(m *simMsg) bool {
	for _, a := range m.prog {
		if a.op == opFail || a.op == opPanic || a.op == opBig {
			return true
		}
	}
	return false
}

// checkOrder checks per-sender order per address: a sender's messages to
// one address are applied in the order it sent them.
func (w *simWorld) checkOrder(applied map[string][]simApplied) {
	type key struct{ sender, target string }
	sent := map[key][]string{}
	// Function sends: in the sender's log order, then program order.
	for _, a := range append(append([]Address(nil), w.accts...), w.remote...) {
		var seq []string
		for tag, as := range applied {
			if as[0].at == a.String() {
				seq = append(seq, tag)
			}
		}
		sort.Slice(seq, func(i, j int) bool { return applied[seq[i]][0].pos < applied[seq[j]][0].pos })
		for _, tag := range seq {
			for _, act := range w.msgs[tag].prog {
				if act.op == opSend {
					c := w.msgs[act.child]
					k := key{a.String(), c.target.String()}
					sent[k] = append(sent[k], c.tag)
				}
			}
		}
	}
	// Ingress: in push order (keyed messages, which may be pushed again,
	// aside).
	var ing []*simMsg
	for _, tag := range w.order {
		if m := w.msgs[tag]; m.ingress && m.seq != 0 && m.key == "" {
			ing = append(ing, m)
		}
	}
	sort.Slice(ing, func(i, j int) bool { return ing[i].seq < ing[j].seq })
	for _, m := range ing {
		k := key{"ingress", m.target.String()}
		sent[k] = append(sent[k], m.tag)
	}
	for k, tagsSent := range sent {
		last := -1
		for _, tag := range tagsSent {
			as := applied[tag]
			if len(as) != 1 {
				continue
			}
			if as[0].pos <= last {
				w.fail("order from %s to %s broken: sent %v, applied at %v", k.sender, k.target, tagsSent, positions(applied, tagsSent))
			}
			last = as[0].pos
		}
	}
}

func positions(applied map[string][]simApplied, tags []string) []int {
	var out []int
	for _, t := range tags {
		if as := applied[t]; len(as) == 1 {
			out = append(out, as[0].pos)
		} else {
			out = append(out, -1)
		}
	}
	return out
}

func stackTop() string {
	b := make([]byte, 8192)
	n := runtime.Stack(b, false)
	return string(b[:n])
}
