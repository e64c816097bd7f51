package shard

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
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
//
// A program (a message's payload, or a remote result) is ';'-separated
// statements run by the invocation in order:
//
//	set NAME=VALUE | del NAME | send ADDR TYPE [PAYLOAD] | later DUR ADDR TYPE [TOKEN]
//	cancel TOKEN | egress NAME TEXT | reply TEXT | big NAME BYTES | fail TEXT | panic
//
// Function types: t/fn (embedded, states a and b), t/remote (remote: the
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
	for i := 0; i < n; i++ {
		h.shards = append(h.shards, New(Config{
			Index: i, Count: n, Handler: h.h, Log: h.log, Store: emptyStore{}, IDs: ids,
			ArenaBudget: 1 << 20, MailboxCapacity: lane, MaxRecordBytes: recordLimit,
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

func (h *harness) do(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	switch d.Cmd {
	case "push", "restore":
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
	case "step":
		times := 1
		d.MaybeScanArgs(t, "times", &times)
		for k := 0; k < times; k++ {
			for _, s := range h.shards {
				if d.HasArg("shard") {
					var i int
					d.ScanArgs(t, "shard", &i)
					if s.Index() != i {
						continue
					}
				}
				h.step(s)
			}
		}
	case "run":
		for round := 0; ; round++ {
			worked := false
			for _, s := range h.shards {
				if h.step(s) {
					worked = true
				}
			}
			if !worked {
				break
			}
			if round > 1000 {
				t.Fatal("run did not settle")
			}
		}
	case "durable":
		h.log.durable = h.log.end
		fmt.Fprintf(h.out, "durable to %d\n", h.log.durable)
	case "applied":
		for _, s := range h.shards {
			s.SetApplied(h.log.durable)
		}
		return "ok"
	case "tick":
		var ds string
		d.ScanArgs(t, "d", &ds)
		dur, err := time.ParseDuration(ds)
		if err != nil {
			t.Fatal(err)
		}
		h.now += int64(dur)
		return "ok"
	case "fail-append":
		msg := "disk full"
		d.MaybeScanArgs(t, "err", &msg)
		h.log.failNext = errors.New(msg)
		return "ok"
	case "fail-log":
		msg := "fsync failed"
		d.MaybeScanArgs(t, "err", &msg)
		h.log.err = errors.New(msg)
		return "ok"
	case "complete":
		var to string
		d.ScanArgs(t, "to", &to)
		a := parseAddr(t, to)
		call := h.h.calls[a]
		if call == nil {
			t.Fatalf("%s: no remote call in flight for %s", d.Pos, to)
		}
		delete(h.h.calls, a)
		call.Result = strings.TrimSpace(d.Input)
		call.Shard().Complete(call)
		return "ok"
	case "restore-timer":
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
	case "map":
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
	case "state":
		var to string
		d.ScanArgs(t, "to", &to)
		a := parseAddr(t, to)
		s := h.shardOf(a)
		blob, _, ok := s.arena.Get(format.AppendAddress(nil, a))
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
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	h.reportAcks()
	if h.out.Len() == 0 {
		return "nothing"
	}
	return strings.TrimRight(h.out.String(), "\n")
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

// scriptLog records appends and prints each record.
type scriptLog struct {
	out         *strings.Builder
	end         uint64
	durable     uint64
	failNext    error
	err         error
	shard       int
	nextIngress uint64
	rec         format.Record
}

func (l *scriptLog) Append(b *RecordBatch) (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	if err := l.failNext; err != nil {
		l.failNext = nil
		return 0, err
	}
	for i := 0; i < b.Len(); i++ {
		l.end += uint64(len(b.Record(i)))
		if err := format.DecodeRecord(b.Record(i), &l.rec); err != nil {
			panic(err)
		}
		fmt.Fprintf(l.out, "s%d: record %s\n", l.shard, describe(&l.rec))
	}
	fmt.Fprintf(l.out, "s%d: appended %d record(s), end %d\n", l.shard, b.Len(), l.end)
	return l.end, nil
}

func (l *scriptLog) Durable() uint64 { return l.durable }
func (l *scriptLog) Err() error      { return l.err }

func describe(r *format.Record) string {
	a, _ := format.DecodeAddress(r.TargetRaw)
	var b strings.Builder
	fmt.Fprintf(&b, "%s consumed=%v", a, r.Consumed)
	for _, s := range r.States {
		switch s.Op {
		case format.OpSet:
			fmt.Fprintf(&b, " set(%s=%s)", s.Name, clip(s.Value))
		case format.OpDelete:
			fmt.Fprintf(&b, " del(%s)", s.Name)
		case format.OpMapSet:
			fmt.Fprintf(&b, " mset(%s[%s]=%s)", s.Name, s.Key, clip(s.Value))
		case format.OpMapDelete:
			fmt.Fprintf(&b, " mdel(%s[%s])", s.Name, s.Key)
		case format.OpMapClear:
			fmt.Fprintf(&b, " mclear(%s)", s.Name)
		}
	}
	for _, m := range r.Messages {
		to, _ := format.DecodeAddress(m.TargetRaw)
		fmt.Fprintf(&b, " send(%d %s %s", m.ID, to, m.Type)
		if m.FireAt != 0 {
			fmt.Fprintf(&b, " at=+%v", time.Duration(m.FireAt-int64(time.Hour)))
		}
		if len(m.Token) > 0 {
			fmt.Fprintf(&b, " token=%s", m.Token)
		}
		if m.ReplyTo&format.ReplyKeep != 0 {
			fmt.Fprintf(&b, " reply=%d keep", m.ReplyTo&^format.ReplyKeep)
		} else if m.ReplyTo != 0 {
			fmt.Fprintf(&b, " reply=%d", m.ReplyTo)
		}
		b.WriteString(")")
	}
	for _, c := range r.Cancels {
		fmt.Fprintf(&b, " cancel(%d)", c)
	}
	for _, e := range r.Egress {
		fmt.Fprintf(&b, " egress(%s %s)", e.Name, clip(e.Payload))
	}
	for _, k := range r.Keys {
		fmt.Fprintf(&b, " key(%d %s expires=+%v)", k.ID, k.Key, time.Duration(k.ExpireAt-int64(time.Hour)))
	}
	if r.HasReply {
		fmt.Fprintf(&b, " keep-reply(%d %s)", r.Reply.RequestID, r.Reply.Payload)
	}
	return b.String()
}

func clip(b []byte) string {
	for _, c := range b {
		if c < ' ' || c > '~' {
			return fmt.Sprintf("<%d bytes>", len(b))
		}
	}
	if len(b) > 120 {
		return fmt.Sprintf("%s…(%d bytes)", b[:40], len(b))
	}
	return string(b)
}

type scriptIDs struct{ next uint64 }

func (s *scriptIDs) NextBlock() (uint64, uint64, error) {
	lo := s.next
	s.next += 100
	return lo, lo + 100, nil
}

type emptyStore struct{}

func (emptyStore) LoadInstance(uint16, []byte, func([]byte, int64, []byte)) error { return nil }
func (emptyStore) LoadMap(uint16, []byte, []byte, func([]byte, []byte) bool) error   { return nil }

// scriptHandler runs programs.
type scriptHandler struct {
	out        *strings.Builder
	fn, remote *FuncType
	calls      map[format.Address]*AsyncCall
}

func (h *scriptHandler) Lookup(ns, typ string) *FuncType {
	switch {
	case ns == "t" && typ == "fn":
		return h.fn
	case ns == "t" && typ == "remote":
		return h.remote
	}
	return nil
}

func (h *scriptHandler) Invoke(inv *Invocation) error {
	_, payload := inv.Message()
	return runProgram(inv, string(payload))
}

func (h *scriptHandler) StartAsync(call *AsyncCall) {
	var ids []string
	for _, m := range call.Messages {
		ids = append(ids, strconv.FormatUint(m.ID, 10))
	}
	fmt.Fprintf(h.out, "remote call %s attempt %d: messages %s\n", call.Target, call.Attempts, strings.Join(ids, ","))
	h.calls[call.Target] = call
}

func (h *scriptHandler) Resume(inv *Invocation, call *AsyncCall) (bool, error) {
	prog, _ := call.Result.(string)
	if prog == "retry" {
		return true, nil
	}
	return false, runProgram(inv, prog)
}

func (h *scriptHandler) Reply(reqID uint64, typ string, payload []byte) {
	keep := ""
	if reqID&format.ReplyKeep != 0 {
		keep = " (kept)"
	}
	fmt.Fprintf(h.out, "reply to request %d%s: %s\n", reqID&^format.ReplyKeep, keep, payload)
}

func (h *scriptHandler) DeadLetter(target format.Address, typ string, err error) {
	fmt.Fprintf(h.out, "dead letter %s %s: %v\n", target, typ, err)
}

func runProgram(inv *Invocation, prog string) error {
	for _, st := range strings.Split(prog, ";") {
		f := strings.Fields(st)
		if len(f) == 0 {
			continue
		}
		arg := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		addr := func(s string) format.Address {
			p := strings.SplitN(s, "/", 3)
			return format.Address{Namespace: p[0], Type: p[1], ID: p[2]}
		}
		switch f[0] {
		case "set":
			k, v, _ := strings.Cut(arg(1), "=")
			if err := inv.Set(inv.StateIndex(k), []byte(v)); err != nil {
				return err
			}
		case "big":
			n, _ := strconv.Atoi(arg(2))
			if err := inv.Set(inv.StateIndex(arg(1)), make([]byte, n)); err != nil {
				return err
			}
		case "del":
			inv.Remove(inv.StateIndex(arg(1)))
		case "send":
			inv.Send(addr(arg(1)), arg(2), []byte(strings.Join(f[min(3, len(f)):], " ")))
		case "later":
			d, _ := time.ParseDuration(arg(1))
			inv.SendAfter(int64(d), addr(arg(2)), arg(3), nil, arg(4))
		case "cancel":
			inv.Cancel(arg(1))
		case "egress":
			inv.Egress(arg(1), "text", []byte(arg(2)))
		case "reply":
			inv.Reply("text", []byte(arg(1)))
		case "mset":
			if err := inv.MapSet(arg(1), arg(2), []byte(arg(3))); err != nil {
				return err
			}
		case "mdel":
			if err := inv.MapDelete(arg(1), arg(2)); err != nil {
				return err
			}
		case "mclear":
			if err := inv.MapClear(arg(1)); err != nil {
				return err
			}
		case "mget": // mget NAME KEY: reply with what the invocation sees
			v, ok, err := inv.MapGet(arg(1), arg(2))
			if err != nil {
				return err
			}
			inv.Reply("text", []byte(fmt.Sprintf("%s=%s/%v", arg(2), v, ok)))
		case "mlen":
			n, err := inv.MapLen(arg(1))
			if err != nil {
				return err
			}
			inv.Reply("text", []byte(fmt.Sprint("len=", n)))
		case "fail":
			return errors.New(strings.Join(f[1:], " "))
		case "panic":
			panic("program panicked")
		default:
			return fmt.Errorf("bad statement %q", st)
		}
	}
	return nil
}
