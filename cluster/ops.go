package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shardfn/shardfn/engine"
)

// The operator API on a cluster node (httpapi.OpsEngine, with
// httpapi.OpsForwarder for the routes about one address):
//
//   - Status and Functions answer for this node: its current engine (the
//     counters start again at each reopen) and its function types.
//   - SetState and Inspect run on the owner of the address's partition
//     (the HTTP routes are forwarded there, forward.go). A repair is a
//     message on the instance's shard (engine.SetState): its effect record
//     is collected into an epoch, so its store operations go to the
//     partition's changelog in the node's transaction and reach Pebble
//     after the commit; a node that later owns the partition restores it.
//   - Dead letters of every node are records of the cluster's egress topic
//     (egress "dead-letters", one partition): any node lists all of them,
//     in the topic's order (the order their transactions committed), by
//     topic offset (increasing, not dense: a page continues from the last
//     offset + 1).
//   - A replay re-sends each letter as an ingress message to its target's
//     input partition with the idempotency key replayKey(offset): the
//     owner applies the first message of a key and drops later ones (the
//     keys are in the changelog), so a letter's message is applied at most
//     once whichever node replays it, however often, across restarts and
//     moves (keys do not expire in cluster mode; were they to, the markers
//     would still stop replays of marked letters). When the owner consumes it, it writes the marker
//     "replayed/<offset>" to the meta topic in the same transaction
//     (epoch.go), so the marker exists exactly when the message was
//     consumed; listings show it (DeadLetter.Replayed) and replays skip
//     marked letters.

// replayKeyPrefix starts the idempotency key of a replayed dead letter;
// ingress keys may not start with it.
const replayKeyPrefix = "shardfn/dead-letter/"

// replayMarkPrefix starts the meta topic key of a replay marker.
const replayMarkPrefix = "replayed/"

func replayKey(offset uint64) string { return replayKeyPrefix + strconv.FormatUint(offset, 10) }

// replayedOffset is the dead letter's offset of a replay key.
func replayedOffset(key string) (uint64, bool) {
	if !strings.HasPrefix(key, replayKeyPrefix) {
		return 0, false
	}
	off, err := strconv.ParseUint(key[len(replayKeyPrefix):], 10, 64)
	return off, err == nil
}

// checkIngressKey refuses an ingress idempotency key in the space of
// replayed dead letters.
func checkIngressKey(key string) error {
	if strings.HasPrefix(key, replayKeyPrefix) {
		return fmt.Errorf("%w: idempotency keys starting with %q are reserved for replayed dead letters", engine.ErrBadKey, replayKeyPrefix)
	}
	return nil
}

// replayMarkRecord is the marker of a consumed replay (written by the
// owner inside the transaction that consumed the message).
func (n *Node) replayMarkRecord(offset uint64, target engine.Address) *kgo.Record {
	return &kgo.Record{Topic: n.topics.Meta, Partition: 0,
		Key: []byte(replayMarkPrefix + strconv.FormatUint(offset, 10)), Value: []byte(target.String())}
}

// replayMarks is a node's copy of the meta topic's replay markers, read
// committed and incrementally.
type replayMarks struct {
	mu   sync.Mutex
	next int64               // the next meta record to read
	done map[uint64]struct{} // dead letter offsets replayed
}

// ownedEngine is the engine, if it serves addr's partition now.
func (n *Node) ownedEngine(addr engine.Address) (*engine.Engine, error) {
	e, err := n.engine()
	if err != nil {
		return nil, err
	}
	p := PartitionOfAddress(addr, n.parts)
	if n.changed.Load() { // a rebalance: this engine's view may be stale
		return nil, ErrNotReady
	}
	if owned, adopted := *n.owned.Load(), *n.adopted.Load(); int(p) >= len(adopted) || !adopted[p] || !owned[p] {
		return nil, fmt.Errorf("%w: %s is in partition %d, which node %s does not own; ask its owner", ErrNotOwner, addr, p, n.cfg.Node)
	}
	return e, nil
}

// Status is this node's engine's status (not ready while the node opens
// or reopens its engine).
func (n *Node) Status() engine.Status {
	e := n.eng.Load()
	if e == nil {
		st := engine.Status{Failed: "cluster node not ready (joining or rebalancing)"}
		if err := n.Err(); err != nil {
			st.Failed = err.Error()
		}
		return st
	}
	st := e.Status()
	st.Ready = st.Ready && n.Ready()
	return st
}

// Functions lists this node's function types (with its engine's counts;
// before the first engine opened, the configured types with none).
func (n *Node) Functions() []engine.FunctionInfo {
	if e := n.eng.Load(); e != nil {
		return e.Functions()
	}
	out := make([]engine.FunctionInfo, 0, len(n.cfg.Specs))
	for _, sp := range n.cfg.Specs {
		out = append(out, engine.FunctionInfo{Namespace: sp.Namespace, Type: sp.Type, Remote: sp.Remote, States: sp.States})
	}
	return out
}

// SetState repairs an instance's state on the node that owns it
// (engine.SetState): exactly like an invocation's writes, through the
// node's transaction and the partition's changelog. ErrNotOwner on
// another node (the HTTP route forwards to the owner).
func (n *Node) SetState(ctx context.Context, addr engine.Address, muts []engine.StateMutation) error {
	e, err := n.ownedEngine(addr)
	if err != nil {
		return err
	}
	return n.discarded(e, e.SetState(ctx, addr, muts))
}

// discarded turns the error of an engine the node discarded meanwhile (an
// epoch that did not commit, the partitions moved) into a retryable one:
// the node opens a new engine at once. A repair in the discarded engine's
// memory did not commit.
func (n *Node) discarded(e *engine.Engine, err error) error {
	if err == nil || n.ctx.Err() != nil || (!errors.Is(err, engine.ErrClosed) && !errors.Is(err, engine.ErrFailed)) {
		return err
	}
	if e.Err() == nil && n.eng.Load() == e {
		return err // a failure of the current engine: not for a retry to cure
	}
	return fmt.Errorf("%w: the node's engine was discarded (its transaction did not commit, or the partitions moved): %v; retry (a state repair sets absolute values, so repeating one is safe)",
		engine.ErrOverloaded, err)
}

// Inspect returns an instance's queued and delayed messages on the node
// that owns it. Queued are the messages the owner's engine holds; those
// still in the input topic are not shown.
func (n *Node) Inspect(ctx context.Context, addr engine.Address, max int) (engine.InstanceInfo, error) {
	e, err := n.ownedEngine(addr)
	if err != nil {
		return engine.InstanceInfo{}, err
	}
	info, err := e.Inspect(ctx, addr, max)
	return info, n.discarded(e, err)
}

// DeadLetters lists the cluster's dead letters (every node's) from the
// egress topic offset from, at most max (default 100, at most 10000), in
// the topic's order; a letter whose replay was consumed is Replayed.
func (n *Node) DeadLetters(ctx context.Context, from uint64, max int) ([]engine.DeadLetter, error) {
	recs, err := n.ReadEgress(ctx, engine.DeadLetterEgress, from, max, 0, 0)
	if err != nil {
		return nil, err
	}
	done, err := n.replayed(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]engine.DeadLetter, 0, len(recs))
	for _, r := range recs {
		d := engine.DecodeDeadLetter(r)
		_, d.Replayed = done[d.Offset]
		out = append(out, d)
	}
	return out, nil
}

// ReplayDeadLetters re-sends the dead letters at egress topic offsets
// [from, to) as ingress messages to their targets, each with the
// idempotency key of its letter (see the top of this file): a letter's
// message is applied once however often it is replayed. Letters marked
// replayed are skipped; undecodable ones, those of a function type not
// registered or not taking the message from ingress, and state repairs
// are skipped with the reason. It returns once the input topic holds the
// re-sent messages (their markers appear once their owners consumed
// them).
func (n *Node) ReplayDeadLetters(ctx context.Context, from, to uint64) (engine.ReplayResult, error) {
	var res engine.ReplayResult
	if to <= from {
		return res, fmt.Errorf("%w: replay range [%d, %d) is empty", engine.ErrBadMessage, from, to)
	}
	if to-from > engine.MaxReplay {
		return res, fmt.Errorf("%w: replay range [%d, %d) spans more than %d offsets; replay it in parts", engine.ErrBadMessage, from, to, engine.MaxReplay)
	}
	e, err := n.engine()
	if err != nil {
		return res, err
	}
	done, err := n.replayed(ctx)
	if err != nil {
		return res, err
	}
	var msgs []engine.Outgoing
	for next := from; next < to; {
		recs, err := n.ReadEgress(ctx, engine.DeadLetterEgress, next, int(min(to-next, engine.MaxReplay)), 0, 0)
		if err != nil {
			return res, err
		}
		if len(recs) == 0 {
			break // past the end
		}
		for _, r := range recs {
			if r.Offset >= to {
				break
			}
			d := engine.DecodeDeadLetter(r)
			if _, ok := done[d.Offset]; ok {
				d.Replayed = true
				d.Bad = "replayed already: its message was consumed by its target (in cluster mode a letter is replayed once)"
			} else if d.Bad == "" {
				// (A state repair's reserved type is refused here too.)
				if err := e.ValidateIngress(d.Target, d.Message); err != nil {
					d.Bad = err.Error()
				}
			}
			if d.Bad != "" {
				res.Skipped = append(res.Skipped, d)
				continue
			}
			res.Replayed = append(res.Replayed, d)
			msgs = append(msgs, engine.Outgoing{To: d.Target, Message: d.Message, Key: replayKey(d.Offset)})
		}
		next = recs[len(recs)-1].Offset + 1
	}
	if len(msgs) == 0 {
		return res, nil
	}
	if err := n.sendBatch(ctx, e, msgs); err != nil {
		return res, fmt.Errorf("cluster: replay of dead letters [%d, %d): %w (replaying the range again is safe: each letter's message is applied once)", from, to, err)
	}
	return res, nil
}

// replayed brings the node's copy of the replay markers up to the meta
// topic's last stable offset and returns it (read only by the caller).
func (n *Node) replayed(ctx context.Context) (map[uint64]struct{}, error) {
	m := &n.marks
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		m.done = map[uint64]struct{}{}
	}
	meta := n.topics.Meta
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ends, err := n.adm.ListCommittedOffsets(ctx, meta)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: end of %s: %v", engine.ErrOverloaded, meta, err)
	}
	o, ok := ends.Lookup(meta, 0)
	if !ok || o.Offset <= m.next {
		return copyMarks(m.done), nil
	}
	end := o.Offset
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{meta: {0: kgo.NewOffset().At(m.next)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}, n.cfg.ClientOpts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for m.next < end {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: read replay markers from %s: %v", engine.ErrOverloaded, meta, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("%w: read replay markers from %s: %v", engine.ErrOverloaded, meta, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < m.next || r.Offset >= end {
				return
			}
			m.next = r.Offset + 1
			if r.Attrs.IsControl() || !strings.HasPrefix(string(r.Key), replayMarkPrefix) {
				return
			}
			if off, err := strconv.ParseUint(string(r.Key[len(replayMarkPrefix):]), 10, 64); err == nil {
				m.done[off] = struct{}{}
			}
		})
	}
	return copyMarks(m.done), nil
}

func copyMarks(m map[uint64]struct{}) map[uint64]struct{} {
	out := make(map[uint64]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}
