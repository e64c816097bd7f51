package engine

import (
	"errors"
	"fmt"
	"strconv"
)

// The simulator (sim_test.go): the simulated functions.

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
