package shard

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/shardfn/shardfn/internal/format"
)

// TestStep runs the interaction scripts in testdata/step: each pushes
// messages, steps shards, makes the log durable up to a point, and expects
// the exact records appended, messages handed over, outputs released and
// dead letters, as the semantics say. Run with -rewrite to regenerate the
// expected output, then review the diff.
//
// Commands:
//
//	shards n=N [record-limit=B] [lane=C]  new harness with N shards
//	push to=ADDR [type=T] [ack=NAME] [reply=ID]   ingress message; the input is its program
//	step [shard=I] [times=K]            Step shards (all, in index order)
//	run                                 Step all shards until none works
//	durable                             the log becomes durable up to everything appended
//	applied                             the store has applied everything durable
//	tick d=DURATION                     advance the clock
//	fail-append [err=TEXT]              the next Append fails
//	fail-log [err=TEXT]                 the log fails for good
//	complete to=ADDR                    finish the remote call of ADDR; the input is its result program
//	restore-timer shard=I id=ID at=DURATION token=T  re-arm a recovered delayed message (input: from to type)
//	restore to=ADDR id=ID               enqueue a recovered in-flight message (input: program)
//	state to=ADDR                       the instance's cached state
//	map to=ADDR name=NAME               the instance's cached map state
//
// A program (a message's payload, or a remote result) is ';'-separated
// statements run by the invocation in order:
//
//	set NAME=VALUE | del NAME | send ADDR TYPE [PAYLOAD] | later DUR ADDR TYPE [TOKEN]
//	cancel TOKEN | egress NAME TEXT | reply TEXT | big NAME BYTES | fail TEXT | panic
//	mset MAP KEY VALUE | mdel MAP KEY | mclear MAP | mget MAP KEY | mlen MAP
//
// Function types: t/fn (embedded, states a and b, map m), t/remote (remote: the
// harness holds its calls until "complete"); anything else is unregistered.
func TestStep(t *testing.T) {
	datadriven.Walk(t, "testdata/step", func(t *testing.T, path string) {
		var h *harness
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "shards" {
				n, limit, lane := 1, 0, 0
				d.MaybeScanArgs(t, "n", &n)
				d.MaybeScanArgs(t, "record-limit", &limit)
				d.MaybeScanArgs(t, "lane", &lane)
				h = newHarness(n, limit, lane)
				return "ok"
			}
			if h == nil {
				t.Fatalf("%s: start the script with shards", d.Pos)
			}
			return h.do(t, d)
		})
	})
}

type harness struct {
	shards []*Shard
	log    *scriptLog
	h      *scriptHandler
	now    int64
	acks   map[string]*format.Ack
	acked  map[string]bool
	out    *strings.Builder
}

func newHarness(n, recordLimit, lane int) *harness {
	out := &strings.Builder{}
	h := &harness{
		log:   &scriptLog{out: out},
		acks:  map[string]*format.Ack{},
		acked: map[string]bool{},
		out:   out,
		now:   int64(time.Hour),
	}
	h.h = &scriptHandler{out: out, calls: map[format.Address]*AsyncCall{}}
	h.h.fn = &FuncType{Namespace: "t", Type: "fn", MapNames: []string{"m"}}
	h.h.fn.SetSpecs([]StateSpec{{Name: "a"}, {Name: "b"}})
	h.h.remote = &FuncType{Namespace: "t", Type: "remote", Async: true}
	h.h.remote.SetSpecs([]StateSpec{{Name: "a"}})
	ids := &scriptIDs{next: 100}
	if lane == 0 {
		lane = 64
	}
	if recordLimit == 0 {
		recordLimit = 32 << 20
	}
	for i := 0; i < n; i++ {
		h.shards = append(h.shards, New(Config{
			Index: i, Count: n, Handler: h.h, Log: h.log, Store: emptyStore{}, IDs: ids,
			ArenaBudget: 1 << 20, MailboxCapacity: lane, MaxRecordBytes: recordLimit,
			MaxStateBytes: 1 << 20, KeyRetention: int64(24 * time.Hour),
			Clock: func() int64 { return h.now },
		}))
	}
	for _, s := range h.shards {
		s.Connect(h.shards)
	}
	return h
}

func (h *harness) shardOf(a format.Address) *Shard {
	return h.shards[format.ShardOf(format.KeyGroup(a.Hash()), len(h.shards))]
}

// do runs one script command. Commands that only set the scene answer
// "ok"; the others answer what the shards did (queued, appended, released,
// sent to peers), or "nothing".
func (h *harness) do(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	cmds := map[string]func(*testing.T, *datadriven.TestData) string{
		"push": h.push, "restore": h.push, "step": h.stepCmd, "run": h.run,
		"durable": h.durable, "applied": h.applied, "tick": h.tick,
		"fail-append": h.failAppend, "fail-log": h.failLog, "complete": h.complete,
		"restore-timer": h.restoreTimer, "map": h.mapCmd, "state": h.stateCmd,
	}
	cmd := cmds[d.Cmd]
	if cmd == nil {
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if out := cmd(t, d); out != "" {
		return out
	}
	h.reportAcks()
	if h.out.Len() == 0 {
		return "nothing"
	}
	return strings.TrimRight(h.out.String(), "\n")
}

// push to=<addr> [type= ack= reply= keep key=] <payload>: an ingress
// message; restore id=... puts it back as recovery would.
func (h *harness) push(t *testing.T, d *datadriven.TestData) string {
	var to, typ, ack string
	var reply, id uint64
	d.ScanArgs(t, "to", &to)
	typ = "msg"
	d.MaybeScanArgs(t, "type", &typ)
	d.MaybeScanArgs(t, "ack", &ack)
	d.MaybeScanArgs(t, "reply", &reply)
	d.MaybeScanArgs(t, "id", &id)
	if d.HasArg("keep") {
		reply |= format.ReplyKeep
	}
	env := format.Envelope{Target: parseAddr(t, to), Type: typ, Payload: []byte(strings.TrimSpace(d.Input)), ReplyTo: reply}
	d.MaybeScanArgs(t, "key", &env.Key)
	if ack != "" {
		env.Ack = format.NewAck(1)
		h.acks[ack] = env.Ack
	}
	s := h.shardOf(env.Target)
	if d.Cmd == "restore" {
		env.ID = id
		s.Restore(env)
		return "ok"
	}
	h.log.nextIngress++
	env.ID = h.log.nextIngress
	if !s.Mailbox().Push(&env) {
		return "mailbox full"
	}
	fmt.Fprintf(h.out, "s%d: queued id=%d\n", s.Index(), env.ID)
	return ""
}

// step [times=n] [shard=i]: one Step of every shard (or of shard i).
func (h *harness) stepCmd(t *testing.T, d *datadriven.TestData) string {
	times, only := 1, -1
	d.MaybeScanArgs(t, "times", &times)
	d.MaybeScanArgs(t, "shard", &only)
	for k := 0; k < times; k++ {
		for _, s := range h.shards {
			if only < 0 || s.Index() == only {
				h.step(s)
			}
		}
	}
	return ""
}

// run: steps every shard until none has work.
func (h *harness) run(t *testing.T, _ *datadriven.TestData) string {
	for round := 0; ; round++ {
		worked := false
		for _, s := range h.shards {
			if h.step(s) {
				worked = true
			}
		}
		if !worked {
			return ""
		}
		if round > 1000 {
			t.Fatal("run did not settle")
		}
	}
}

// durable: the log becomes durable up to its end.
func (h *harness) durable(*testing.T, *datadriven.TestData) string {
	h.log.durable = h.log.end
	fmt.Fprintf(h.out, "durable to %d\n", h.log.durable)
	return ""
}

// applied: the store has applied the log up to its durable end.
func (h *harness) applied(*testing.T, *datadriven.TestData) string {
	for _, s := range h.shards {
		s.SetApplied(h.log.durable)
	}
	return "ok"
}

// tick d=<duration>: the clock moves on.
func (h *harness) tick(t *testing.T, d *datadriven.TestData) string {
	var ds string
	d.ScanArgs(t, "d", &ds)
	dur, err := time.ParseDuration(ds)
	if err != nil {
		t.Fatal(err)
	}
	h.now += int64(dur)
	return "ok"
}

// fail-append [err=]: the next Append fails.
func (h *harness) failAppend(t *testing.T, d *datadriven.TestData) string {
	msg := "disk full"
	d.MaybeScanArgs(t, "err", &msg)
	h.log.failNext = errors.New(msg)
	return "ok"
}

// fail-log [err=]: the log fails for good.
func (h *harness) failLog(t *testing.T, d *datadriven.TestData) string {
	msg := "fsync failed"
	d.MaybeScanArgs(t, "err", &msg)
	h.log.err = errors.New(msg)
	return "ok"
}

// complete to=<addr> <program|retry>: the remote call of addr returns.
func (h *harness) complete(t *testing.T, d *datadriven.TestData) string {
	var to string
	d.ScanArgs(t, "to", &to)
	a := parseAddr(t, to)
	call := h.h.calls[a]
	if call == nil {
		t.Fatalf("%s: no remote call in flight for %s", d.Pos, to)
	}
	delete(h.h.calls, a)
	complete(call, strings.TrimSpace(d.Input))
	call.Shard().Complete(call)
	return "ok"
}

// restore-timer shard= id= at= [token=] <caller> <target> <type>: a
// delayed message put back as recovery would.
func (h *harness) restoreTimer(t *testing.T, d *datadriven.TestData) string {
	var shard int
	var id uint64
	var at, token string
	d.ScanArgs(t, "shard", &shard)
	d.ScanArgs(t, "id", &id)
	d.ScanArgs(t, "at", &at)
	d.MaybeScanArgs(t, "token", &token)
	f := strings.Fields(d.Input)
	dur, _ := time.ParseDuration(at)
	env := format.Envelope{ID: id, Caller: parseAddr(t, f[0]), Target: parseAddr(t, f[1]), Type: f[2]}
	h.shards[shard].RestoreTimer(h.now+int64(dur), env, token)
	return "ok"
}

// map to= name=: the cached map state of an instance.
func (h *harness) mapCmd(t *testing.T, d *datadriven.TestData) string {
	var to, name string
	d.ScanArgs(t, "to", &to)
	d.ScanArgs(t, "name", &name)
	a := parseAddr(t, to)
	s := h.shardOf(a)
	ms := s.maps[s.mapKey(a, name)]
	if ms == nil {
		return "not cached"
	}
	keys := make([]string, 0, len(ms.m))
	for k := range ms.m {
		keys = append(keys, k+"="+string(ms.m[k]))
	}
	sort.Strings(keys)
	return fmt.Sprintf("%d bytes: %s", ms.bytes, strings.Join(keys, " "))
}

// state to=: the cached state of an instance.
func (h *harness) stateCmd(t *testing.T, d *datadriven.TestData) string {
	var to string
	d.ScanArgs(t, "to", &to)
	a := parseAddr(t, to)
	blob, _, ok := h.shardOf(a).arena.Get(format.AppendAddress(nil, a))
	if !ok {
		return "not cached"
	}
	ents, err := format.DecodeBlob(blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, e := range ents {
		parts = append(parts, fmt.Sprintf("%s=%s", e.Name, e.Value))
	}
	if len(parts) == 0 {
		return "empty"
	}
	return strings.Join(parts, " ")
}

// step runs one Step and reports what it handed to peers and whether the
// shard failed.
func (h *harness) step(s *Shard) bool {
	before := make([]int, len(h.shards))
	for i, p := range h.shards {
		before[i] = p.Mailbox().Len()
	}
	h.log.shard = s.Index()
	wasFailed := s.Err() != nil
	worked := s.Step(h.now)
	for i, p := range h.shards {
		if i != s.Index() && p.Mailbox().Len() > before[i] {
			fmt.Fprintf(h.out, "s%d: handed %d message(s) to s%d\n", s.Index(), p.Mailbox().Len()-before[i], i)
		}
	}
	if err := s.Err(); err != nil && !wasFailed {
		fmt.Fprintf(h.out, "s%d: failed: %v\n", s.Index(), err)
	}
	return worked
}

func (h *harness) reportAcks() {
	names := make([]string, 0, len(h.acks))
	for n := range h.acks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := h.acks[n]
		if h.acked[n] {
			continue
		}
		select {
		case <-a.Done():
			h.acked[n] = true
			if err := a.Err(); err != nil {
				fmt.Fprintf(h.out, "ack %s: %v\n", n, err)
			} else {
				fmt.Fprintf(h.out, "ack %s: ok\n", n)
			}
		default:
		}
	}
}

func parseAddr(t *testing.T, s string) format.Address {
	p := strings.SplitN(s, "/", 3)
	if len(p) != 3 {
		t.Fatalf("bad address %q", s)
	}
	return format.Address{Namespace: p[0], Type: p[1], ID: p[2]}
}
