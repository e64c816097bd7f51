package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The simulator (sim_test.go): checking a run against its model.

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

// simOutcome is what a run left: each message's applications (from the
// instances' logs), dead letters and egress records.
type simOutcome struct {
	applied        map[string][]simApplied // by message tag
	logs           map[string][]string     // by address: tags in log order
	dead           map[string]int          // by tag
	deadTarget     map[string]string       // by tag
	egress         map[string]int          // by tag
	egressBySource map[string][]string     // by source address: tags in order
}

func (o *simOutcome) consumed(tag string) int   { return len(o.applied[tag]) + o.dead[tag] }
func (o *simOutcome) isApplied(tag string) bool { return len(o.applied[tag]) == 1 }

func (w *simWorld) check() {
	if len(w.violations) > 0 {
		w.fail("functions saw: %s", strings.Join(w.violations, "; "))
	}
	o := &simOutcome{applied: map[string][]simApplied{}, logs: map[string][]string{}}
	w.gatherApplied(o)
	w.gatherDeadLetters(o)
	w.gatherEgress(o)
	w.stats.deadLetters += len(o.dead)
	for _, tag := range w.order {
		w.checkMessage(o, w.msgs[tag])
	}
	w.checkEgressOrder(o)
	w.checkOrder(o.applied)
}

// gatherApplied reads every instance's state: its log of applied tags, and
// the values written with it.
func (w *simWorld) gatherApplied(o *simOutcome) {
	for _, a := range append(append([]Address(nil), w.accts...), w.remote...) {
		vals, err := w.e.State(context.Background(), a)
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
			o.applied[tag] = append(o.applied[tag], simApplied{at: a.String(), pos: i, ns: ms, boot: boot})
			o.logs[a.String()] = append(o.logs[a.String()], tag)
			if m := w.msgs[tag]; m == nil || m.target != a {
				w.fail("%s applied %s, which is not addressed to it", a, tag)
			}
		}
	}
}

func (w *simWorld) gatherDeadLetters(o *simOutcome) {
	o.dead, o.deadTarget = map[string]int{}, map[string]string{}
	for _, r := range w.readEgress("dead-letters") {
		var dl struct {
			Target, Caller, Type, Error string
			PayloadB64                  []byte `json:"payload_b64"`
		}
		if err := json.Unmarshal(r.Message.Value, &dl); err != nil {
			w.fail("dead letter %d: %v", r.Offset, err)
		}
		tag := string(dl.PayloadB64)
		o.dead[tag]++
		o.deadTarget[tag] = dl.Target
	}
}

func (w *simWorld) gatherEgress(o *simOutcome) {
	o.egress, o.egressBySource = map[string]int{}, map[string][]string{}
	for _, r := range w.readEgress(simEgress) {
		tag := string(r.Message.Value)
		o.egress[tag]++
		o.egressBySource[r.Source.String()] = append(o.egressBySource[r.Source.String()], tag)
	}
}

// checkMessage checks one message against the run's outcome: consumed at
// most once, exactly once when it must be, dead-lettered exactly when its
// program fails, delivered no earlier than its delay, with its egress.
func (w *simWorld) checkMessage(o *simOutcome, m *simMsg) {
	tag := m.tag
	c := o.consumed(tag)
	if c > 1 {
		w.fail("%s consumed %d times (applied %v, dead-lettered %d)", tag, c, o.applied[tag], o.dead[tag])
	}
	if c == 1 && o.isApplied(tag) {
		w.stats.applied++
	}
	var parent *simMsg
	if m.parent != "" {
		parent = w.msgs[m.parent]
	}
	if w.required(o, m, parent) && c != 1 {
		w.fail("%s (to %s, parent %q, ingress %v) consumed %d times, want once", tag, m.target, m.parent, m.ingress, c)
	}
	if m.target.Type == "nope" && o.isApplied(tag) {
		w.fail("%s to an unregistered type was applied", tag)
	}
	if o.dead[tag] == 1 {
		if want := m.target.String(); o.deadTarget[tag] != want {
			w.fail("dead letter of %s names target %q, want %q", tag, o.deadTarget[tag], want)
		}
		if m.target.Type == "acct" && !failing(m) {
			w.fail("%s was dead-lettered but its program does not fail", tag)
		}
	}
	if o.isApplied(tag) && m.target.Type == "acct" && failing(m) {
		w.fail("%s fails, yet it was applied", tag)
	}
	if m.delay > 0 && o.isApplied(tag) && parent != nil && o.isApplied(parent.tag) {
		at, sentAt := o.applied[tag][0].ns, o.applied[parent.tag][0].ns
		if at < sentAt+int64(m.delay) {
			w.fail("delayed %s delivered at %d, sent at %d with delay %v", tag, at, sentAt, m.delay)
		}
	}
	// Egress exactly once for an applied message with an egress act.
	wantEgress := 0
	if o.isApplied(tag) {
		for _, a := range m.prog {
			if a.op == opEgress {
				wantEgress++
			}
		}
	}
	if o.egress[tag] != wantEgress {
		w.fail("%s has %d egress records, want %d (applied %v)", tag, o.egress[tag], wantEgress, o.applied[tag])
	}
}

// required reports whether m must have been consumed exactly once: an
// acknowledged ingress message, or one sent by an applied invocation
// (unless its token was replaced or cancelled); it also fails a message
// consumed that should not exist.
func (w *simWorld) required(o *simOutcome, m *simMsg, parent *simMsg) bool {
	c := o.consumed(m.tag)
	switch {
	case m.ingress:
		if m.seq == 0 && c > 0 {
			w.fail("%s was refused at ingress but consumed", m.tag)
		}
		return m.acked
	case parent != nil && o.isApplied(parent.tag):
		if m.delay == 0 || m.token == "" {
			return true
		}
		switch w.tokenFate(m, parent, o.applied, o.logs) {
		case fateCancelled:
			if c != 0 {
				w.fail("%s (token %s) was delivered after its sender replaced or cancelled it: %v", m.tag, m.token, o.applied[m.tag])
			}
			return false
		case fateUnknown:
			return false
		}
		return true
	case parent != nil:
		if c > 0 {
			w.fail("%s was consumed but its sender %s left no effect (applied %v, dead %d)", m.tag, parent.tag, o.applied[parent.tag], o.dead[parent.tag])
		}
	}
	return false
}

// checkEgressOrder: each source's egress records follow its log's order
// (one message may write several records).
func (w *simWorld) checkEgressOrder(o *simOutcome) {
	for src, tagsOut := range o.egressBySource {
		last := -1
		for _, tag := range tagsOut {
			p := slices.Index(o.logs[src], tag)
			if p < last {
				w.fail("egress of %s out of order: %v against its log %v", src, tagsOut, o.logs[src])
			}
			last = p
		}
	}
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
