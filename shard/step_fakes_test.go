package shard

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/internal/format"
)

// The Step scripts' fakes (step_test.go): the log, ids, store and handler,
// and the program language of the messages.

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

func (emptyStore) LoadInstance(uint16, []byte, func([]byte, int64, []byte)) error  { return nil }
func (emptyStore) LoadMap(uint16, []byte, []byte, func([]byte, []byte) bool) error { return nil }

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

// complete sets a pending call's result, a program (or "retry").
func complete(call *AsyncCall, prog string) {
	call.Resume = func(inv *Invocation) (bool, error) {
		if prog == "retry" {
			return true, nil
		}
		return false, runProgram(inv, prog)
	}
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
