package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/wal/vfs"
)

// The simulator (sim_test.go): running a seed.

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
	o.fs = fileSystems{Log: hookFS{fs: w.logFS, hook: hook}, Store: errorfs.Wrap(w.storeFS, storeInjector{hook})}
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
