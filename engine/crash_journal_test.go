package engine

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The crash test's journal workload: every semantic beside counters and
// transfers, checked against a real process killed with SIGKILL. Each
// request has a unique id and one kind:
//
//	rec    the instance records the id in its "seen" list
//	egr    records it and writes it to the crash-out egress
//	fail   writes "seen" and then fails: nothing but a dead letter
//	later  records it and sends itself "f<id>" after a delay (no token)
//	tok    records it and sends itself "t<id>" after a delay with a token
//	       (a later tok of the instance replaces it: at most once)
//	ask    a request: records it and asks a peer, which records "a<id>"
//	       and replies the id (the child checks the reply)
//	key    sent with the idempotency key "k<id>", and sent again in later
//	       rounds: applied once
//
// After each restart the child drains, lets the delays pass, and reports
// every journal, the egress and the dead letters; the parent checks that
// every acknowledged request and everything it caused is there exactly
// once, and nothing was applied twice or without its cause.

var jSeen = ValueSpec{Name: "seen", Type: TypeBytes}

const (
	crashJournals = 6
	crashOut      = "crash-out"
)

func journalSpec() FunctionSpec {
	return FunctionSpec{Namespace: "crash", Type: "journal", States: []ValueSpec{jSeen},
		Function: FunctionFunc(func(ctx Context, msg Message) error {
			seen, _ := ctx.Get(jSeen)
			add := func(s string) error {
				return ctx.Set(jSeen, append(append([]byte(nil), seen...), s+","...))
			}
			f := strings.Fields(string(msg.Value))
			id := ""
			if len(f) > 0 {
				id = f[0]
			}
			switch msg.Type {
			case "rec", "key":
				return add(id)
			case "egr":
				ctx.Egress(crashOut, Message{Type: "id", Value: []byte(id)})
				return add(id)
			case "fail":
				if err := add(id); err != nil {
					return err
				}
				return fmt.Errorf("journal request %s fails by design", id)
			case "later", "tok":
				ms, _ := strconv.Atoi(f[1])
				token, prefix := "", "f"
				if msg.Type == "tok" {
					token, prefix = "tok", "t"
				}
				ctx.SendAfter(time.Duration(ms)*time.Millisecond, ctx.Self(), Message{Type: "fire", Value: []byte(prefix + id)}, token)
				return add(id)
			case "fire":
				return add(id)
			case "ask":
				ctx.Send(Address{Namespace: "crash", Type: "journal", ID: f[1]}, Message{Type: "answer", Value: []byte(id)})
				return add(id)
			case "answer":
				ctx.Reply(String(id))
				return add("a" + id)
			case "list":
				ctx.Reply(Message{Type: TypeBytes, Value: seen})
			}
			return nil
		})}
}

func journal(i int) Address {
	return Address{Namespace: "crash", Type: "journal", ID: fmt.Sprint("j", i)}
}

// journalCommand runs one journal request in the child.
func journalCommand(ctx context.Context, e *Engine, f []string) string {
	id, kind, inst := f[1], f[2], f[3]
	to := Address{Namespace: "crash", Type: "journal", ID: inst}
	var err error
	switch kind {
	case "ask":
		var r Message
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		r, err = e.Request(rctx, to, Message{Type: "ask", Value: []byte(id + " " + f[4])})
		cancel()
		if err == nil {
			if s, _ := r.AsString(); s != id {
				return fmt.Sprintf("badreply %s %q", id, s)
			}
		}
	case "key":
		_, err = e.Send(ctx, to, Message{Type: "key", Value: []byte(id)}, IdempotencyKey("k"+id))
	case "later", "tok":
		_, err = e.Send(ctx, to, Message{Type: kind, Value: []byte(id + " " + f[4])})
	default:
		_, err = e.Send(ctx, to, Message{Type: kind, Value: []byte(id)})
	}
	if err != nil {
		return "nack " + id + " " + err.Error()
	}
	return "ack " + id
}

// journalReport is the child's answer to "jcheck": every journal, the
// egress and the dead letters, after the delays have passed.
func journalReport(ctx context.Context, e *Engine) string {
	time.Sleep(400 * time.Millisecond) // every delay (at most 300 ms) passes
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.Drain(dctx); err != nil {
		return "error " + err.Error()
	}
	var b strings.Builder
	b.WriteString("journal")
	for i := 0; i < crashJournals; i++ {
		r, err := e.Request(dctx, journal(i), Message{Type: "list"})
		if err != nil {
			return "error " + err.Error()
		}
		fmt.Fprintf(&b, " %s=%s", journal(i).ID, strings.TrimSuffix(string(r.Value), ","))
	}
	for _, name := range []string{crashOut, "dead-letters"} {
		var ids []string
		for from := uint64(0); ; {
			recs, err := e.ReadEgress(dctx, name, from, 10000, 0, 0)
			if err != nil {
				return "error " + err.Error()
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				v := string(r.Message.Value)
				if name == "dead-letters" {
					var id string
					if i := strings.Index(v, `"payload_b64":"`); i >= 0 {
						id = decodeB64(v[i+len(`"payload_b64":"`):])
					}
					v = id
				}
				ids = append(ids, v)
			}
			from = recs[len(recs)-1].Offset + 1
		}
		fmt.Fprintf(&b, " %s=%s", name, strings.Join(ids, ","))
	}
	return b.String()
}

func decodeB64(s string) string {
	end := strings.IndexByte(s, '"')
	if end < 0 {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(s[:end])
	if err != nil {
		return ""
	}
	return strings.Fields(string(b) + " ")[0]
}

// journalModel is the parent's record of what it sent and what was
// acknowledged.
type journalModel struct {
	kind   map[string]string // id -> kind
	acked  map[string]bool
	keyed  []string // keyed ids, sent again in later rounds
	nextID int
}

func newJournalModel() *journalModel {
	return &journalModel{kind: map[string]string{}, acked: map[string]bool{}}
}

// next draws one journal request line for the child.
func (m *journalModel) next(rng *rand.Rand) string {
	if len(m.keyed) > 0 && rng.Intn(10) == 0 {
		id := m.keyed[rng.Intn(len(m.keyed))] // a client that did not hear the answer
		return fmt.Sprintf("j %s key j%d", id, keyInst(id))
	}
	m.nextID++
	id := fmt.Sprint("q", m.nextID)
	kinds := []string{"rec", "egr", "fail", "later", "tok", "ask", "key"}
	kind := kinds[rng.Intn(len(kinds))]
	m.kind[id] = kind
	inst := rng.Intn(crashJournals)
	switch kind {
	case "later", "tok":
		return fmt.Sprintf("j %s %s j%d %d", id, kind, inst, 20+rng.Intn(280))
	case "ask":
		return fmt.Sprintf("j %s ask j%d j%d", id, inst, rng.Intn(crashJournals))
	case "key":
		m.keyed = append(m.keyed, id)
		return fmt.Sprintf("j %s key j%d", id, keyInst(id))
	}
	return fmt.Sprintf("j %s %s j%d", id, kind, inst)
}

// keyInst: a keyed id always goes to the same instance (the key is per
// address).
func keyInst(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "q"))
	return n % crashJournals
}

// check verifies a "journal ..." report.
func (m *journalModel) check(t *testing.T, report string, round int) {
	t.Helper()
	f := strings.Fields(report)
	if len(f) != 1+crashJournals+2 || f[0] != "journal" {
		t.Fatalf("round %d: journal report %q", round, report)
	}
	count := map[string]int{}
	for _, part := range f[1 : 1+crashJournals] {
		_, list, _ := strings.Cut(part, "=")
		for _, s := range strings.Split(list, ",") {
			if s != "" {
				count[s]++
			}
		}
	}
	split := func(part string) []string {
		_, list, _ := strings.Cut(part, "=")
		if list == "" {
			return nil
		}
		return strings.Split(list, ",")
	}
	egress := map[string]int{}
	for _, s := range split(f[1+crashJournals]) {
		egress[s]++
	}
	dead := map[string]int{}
	for _, s := range split(f[2+crashJournals]) {
		dead[s]++
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("round %d: journal: "+format, append([]any{round}, args...)...)
	}
	for s, n := range count {
		if n > 1 {
			fail("%s applied %d times", s, n)
		}
		id := strings.TrimLeft(s, "aft")
		if _, ok := m.kind[id]; !ok {
			fail("%s applied but never sent", s)
		}
	}
	ids := make([]string, 0, len(m.kind))
	for id := range m.kind {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		kind, acked := m.kind[id], m.acked[id]
		switch kind {
		case "fail":
			if count[id] > 0 {
				fail("%s fails, yet its state write was kept", id)
			}
			if dead[id] > 1 || (acked && dead[id] != 1) {
				fail("%s (acknowledged %v) dead-lettered %d times", id, acked, dead[id])
			}
		default:
			if dead[id] > 0 {
				fail("%s of kind %s dead-lettered", id, kind)
			}
			if acked && count[id] != 1 {
				fail("%s of kind %s acknowledged but applied %d times", id, kind, count[id])
			}
		}
		applied := count[id] == 1
		switch kind {
		case "egr":
			if egress[id] > 1 || (applied && egress[id] != 1) || (!applied && egress[id] != 0) {
				fail("%s applied=%v has %d egress records", id, applied, egress[id])
			}
		case "later":
			if applied && count["f"+id] != 1 {
				fail("the delayed message of %s delivered %d times", id, count["f"+id])
			}
			if !applied && count["f"+id] != 0 {
				fail("the delayed message of %s delivered without its cause", id)
			}
		case "tok":
			if !applied && count["t"+id] != 0 {
				fail("the delayed message of %s delivered without its cause", id)
			}
		case "ask":
			if applied && count["a"+id] != 1 {
				fail("the answer of %s applied %d times", id, count["a"+id])
			}
			if !applied && count["a"+id] != 0 {
				fail("the answer of %s applied without its cause", id)
			}
		}
	}
	for s := range egress {
		if m.kind[s] != "egr" {
			fail("egress record %q of no egr request", s)
		}
	}
}

// summary counts the journal requests sent and acknowledged, by kind.
func (m *journalModel) summary() string {
	sent, acked := map[string]int{}, map[string]int{}
	for id, k := range m.kind {
		sent[k]++
		if m.acked[id] {
			acked[k]++
		}
	}
	var parts []string
	for _, k := range []string{"rec", "egr", "fail", "later", "tok", "ask", "key"} {
		parts = append(parts, fmt.Sprintf("%s %d/%d", k, acked[k], sent[k]))
	}
	return "journal requests acknowledged/sent: " + strings.Join(parts, ", ")
}
