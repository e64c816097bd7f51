package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardfn/shardfn/internal/format"
	"github.com/shardfn/shardfn/store"
)

// Cluster mode (package cluster) runs one engine per node over a Kafka
// transaction log instead of the write-ahead log. The engine keeps its
// shards, state cache, records and Pebble layout; what changes is:
//
//   - the log: records are appended to memory and become "durable" when the
//     node's Kafka transaction that carries them commits (CommitEpoch);
//   - the applier: the node decodes appended records into an Epoch
//     (CollectEpoch): the store operations of each partition (shipped to
//     the compacted changelog), the messages sent (produced to the target
//     partition of the input topic instead of being delivered in memory)
//     and the egress records; the store receives an epoch's operations
//     only after its transaction committed, so nothing uncommitted ever
//     reaches Pebble;
//   - ingress: messages come from the input topic, already numbered
//     (Deliver); a send is never delivered in memory, so a message is in
//     flight exactly while it is an unconsumed record of the input topic;
//   - delayed messages stay in memory and in the changelog of the sender's
//     partition, so they must target an address of that partition (a
//     delayed send to another partition is dead-lettered).
//
// An aborted transaction leaves the engine's memory ahead of what
// committed: the node fails the engine (Abort) and opens a new one over
// the store.

// ClusterLink is what the engine needs of the cluster node. All fields are
// required.
type ClusterLink struct {
	// Partition maps a key group to its partition.
	Partition func(kg uint16) int32
	// Owns reports whether this node owns partition p now.
	Owns func(p int32) bool
	// ReserveIDs returns a span [lo, hi) of message ids no other engine of
	// the cluster, now or later, will use.
	ReserveIDs func() (lo, hi uint64, err error)
	// Appended is told the log's end after each append (from shard
	// goroutines; it must not block).
	Appended func(end uint64)
}

func (c *ClusterLink) validate() error {
	if c.Partition == nil || c.Owns == nil || c.ReserveIDs == nil || c.Appended == nil {
		return errors.New("engine: Options.Cluster needs Partition, Owns, ReserveIDs and Appended")
	}
	return nil
}

// ErrNotOwner: a cluster node asked for an address whose partition another
// node owns.
var ErrNotOwner = errors.New("engine: this cluster node does not own the address's partition")

// ErrAborted fails an engine whose cluster transaction aborted: its memory
// holds effects that never committed.
var ErrAborted = errors.New("engine: the cluster transaction aborted; this engine's memory is discarded")

// Change is one store operation of a partition (store.ChangeKind), to be
// shipped to the changelog; Value is the end key of a ChangeDeleteRange.
type Change struct {
	Partition  int32
	Kind       store.ChangeKind
	Key, Value []byte
}

// ClusterSend is a message sent by a function: StoredMessage encoding
// (format.DecodeStoredMessage), for the input topic's partition of its
// target.
type ClusterSend struct {
	Partition int32
	ID        uint64
	Msg       []byte
}

// ClusterReply is the reply to a request (made on any node) that an epoch's
// invocation gave: the node produces it to the replies topic inside the
// transaction that commits the invocation, so a reply is seen exactly when
// the work it answers committed.
type ClusterReply struct {
	RequestID     uint64
	Type, Payload []byte
}

// ClusterEgress is one egress record of an epoch.
type ClusterEgress struct {
	Name, Type string
	Source     Address
	Payload    []byte
}

// Epoch is what the records appended since the previous epoch did. Its
// slices are reused by the next CollectEpoch: copy what must outlive it.
type Epoch struct {
	// End is the log position the epoch covers.
	End uint64
	// Records is the number of effect records.
	Records int
	// Consumed lists the ids of the messages consumed (input messages and
	// fired delayed messages).
	Consumed []uint64
	Changes  []Change
	Sends    []ClusterSend
	Egress   []ClusterEgress
	Replies  []ClusterReply

	parts   map[int32]store.Batch // per partition, the operations recorded
	touched []int32
	free    []store.Batch
	arena   []byte
}

// clusterApply is the applier's cluster-mode routing (applier.apply).
type clusterApply struct {
	link     *ClusterLink
	ep       *Epoch
	st       store.Store
	err      error
	key, val []byte // scratch
}

// batch returns the recording batch of key group kg's partition.
func (c *clusterApply) batch(kg uint16) store.Batch {
	p := c.link.Partition(kg)
	b := c.ep.parts[p]
	if b == nil {
		if n := len(c.ep.free); n > 0 {
			b = c.ep.free[n-1]
			c.ep.free = c.ep.free[:n-1]
		} else {
			b = c.st.NewBatch()
		}
		c.ep.parts[p] = b
		c.ep.touched = append(c.ep.touched, p)
	}
	return b
}

func (c *clusterApply) send(targetRaw []byte, id uint64, msg []byte) {
	h, ok := format.HashRaw(targetRaw)
	if !ok {
		c.err = fmt.Errorf("%w: send target", format.ErrCorrupt)
		return
	}
	ep := c.ep
	off := len(ep.arena)
	ep.arena = append(ep.arena, msg...)
	ep.Sends = append(ep.Sends, ClusterSend{Partition: c.link.Partition(format.KeyGroup(h)), ID: id, Msg: ep.arena[off:len(ep.arena):len(ep.arena)]})
}

// expiryPartition records the partition of an idempotency key or kept
// reply as the value of its expiry index entry (CollectExpired reads it).
func (c *clusterApply) expiryPartition(b store.Batch, expireAt int64, kind byte, k uint64, kg uint16) {
	c.key = store.ExpiryIndexKey(c.key, expireAt, kind, k)
	b.Set(c.key, binary.BigEndian.AppendUint32(c.val[:0], uint32(c.link.Partition(kg))))
}

func (c *clusterApply) reply(r *format.RecordReply) {
	ep := c.ep
	off := len(ep.arena)
	ep.arena = append(append(ep.arena, r.Type...), r.Payload...)
	t := ep.arena[off : off+len(r.Type) : off+len(r.Type)]
	p := ep.arena[off+len(r.Type) : len(ep.arena) : len(ep.arena)]
	ep.Replies = append(ep.Replies, ClusterReply{RequestID: r.RequestID, Type: t, Payload: p})
}

func (c *clusterApply) egress(name, sourceRaw, typ, payload []byte) {
	src, err := format.DecodeAddress(sourceRaw)
	if err != nil {
		c.err = err
		return
	}
	c.ep.Egress = append(c.ep.Egress, ClusterEgress{Name: string(name), Type: string(typ), Source: src, Payload: slices.Clone(payload)})
}

// clusterLog is the log of a cluster engine: appended records wait in
// memory (memLog) for the node to collect them; durable is the end of the
// last committed epoch.
type clusterLog struct {
	*memLog
	durable atomic.Uint64
}

func (l *clusterLog) Durable() uint64 { return l.durable.Load() }

// clusterState is the engine's cluster-mode state.
type clusterState struct {
	link    *ClusterLink
	mu      sync.Mutex // one CollectEpoch/CommitEpoch at a time
	log     *clusterLog
	rd      logReader
	applied uint64 // end of the last committed epoch
}

// openCluster sets up the log of a cluster engine (openStore's part).
func (e *Engine) openCluster() {
	c := &clusterState{link: e.opts.Cluster}
	c.log = &clusterLog{memLog: newMemLog(c.link.Appended)}
	c.rd, _ = c.log.NewReader(0)
	e.cl = c
	e.wal = c.log
}

// recoverCluster is recover for a cluster engine: the store holds only
// committed epochs and restored changelogs, so there is no log to replay
// and no in-flight message (those are unconsumed input records).
func (e *Engine) recoverCluster() error {
	ids, err := clusterIDs(e.cl.link.ReserveIDs)
	if err != nil {
		return err
	}
	e.ids = ids
	if err := e.reg.loadSpecs(e.st); err != nil {
		return err
	}
	e.ap = newApplier(e.st, e.logger, e.metrics, e.now, 1)
	e.ap.log = e.wal
	return e.st.ScanTimers(func(id uint64, _ []byte) error {
		e.ap.timers[id] = struct{}{}
		return nil
	})
}

// clusterPartition is the shards' partition map (nil on a single node).
func (e *Engine) clusterPartition() func(uint16) int32 {
	if e.cl == nil {
		return nil
	}
	return e.cl.link.Partition
}

// CollectEpoch decodes every record appended since the previous call into
// ep, adding to what it holds (Reset empties it). Nothing is applied or released: the node ships ep in a
// transaction, then calls CommitEpoch, or Abort if it did not commit.
func (e *Engine) CollectEpoch(ep *Epoch) error {
	c := e.cl
	if c == nil {
		return errors.New("engine: CollectEpoch outside cluster mode")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ep.parts == nil {
		ep.parts = map[int32]store.Batch{}
	}
	ca := &clusterApply{link: c.link, ep: ep, st: e.st}
	e.ap.cl = ca
	defer func() { e.ap.cl = nil }()
	for {
		_, end, rec, err := c.rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := e.ap.apply(rec); err != nil {
			e.failStop(err)
			return err
		}
		if ca.err != nil {
			e.failStop(ca.err)
			return ca.err
		}
		ep.End = end
		ep.Records++
		ep.Consumed = append(ep.Consumed, e.ap.rec.Consumed...)
	}
	if ep.Records == 0 {
		ep.End = c.applied
	}
	defer ep.recycle()
	slices.Sort(ep.touched)
	for _, p := range ep.touched {
		err := store.RangeChanges(ep.parts[p], func(kind store.ChangeKind, key, value []byte) error {
			off := len(ep.arena)
			ep.arena = append(append(ep.arena, key...), value...)
			k := ep.arena[off : off+len(key) : off+len(key)]
			v := ep.arena[off+len(key) : len(ep.arena) : len(ep.arena)]
			if kind == store.ChangeDelete {
				v = nil
			}
			ep.Changes = append(ep.Changes, Change{Partition: p, Kind: kind, Key: k, Value: v})
			return nil
		})
		if err != nil {
			e.failStop(err)
			return err
		}
	}
	return nil
}

// recycle empties the recording batches, whose operations are in Changes.
func (ep *Epoch) recycle() {
	for _, p := range ep.touched {
		b := ep.parts[p]
		b.Reset()
		ep.free = append(ep.free, b)
		delete(ep.parts, p)
	}
	ep.touched = ep.touched[:0]
}

// Reset empties ep for the next epoch, keeping its buffers. Until Reset,
// CollectEpoch adds to what ep holds.
func (ep *Epoch) Reset() {
	ep.recycle()
	ep.End, ep.Records = 0, 0
	ep.Consumed = ep.Consumed[:0]
	clear(ep.Changes)
	ep.Changes = ep.Changes[:0]
	clear(ep.Sends)
	ep.Sends = ep.Sends[:0]
	clear(ep.Egress)
	ep.Egress = ep.Egress[:0]
	clear(ep.Replies)
	ep.Replies = ep.Replies[:0]
	if cap(ep.arena) > 16<<20 {
		ep.arena = nil
	}
	ep.arena = ep.arena[:0]
}

// CommitEpoch is told that ep's transaction committed: it writes ep's
// store operations and the changelog positions (partition -> next offset
// to restore from) in one store batch, then releases the epoch's
// acknowledgements and replies.
func (e *Engine) CommitEpoch(ep *Epoch, positions map[int32]int64) error {
	c := e.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	b := e.st.NewBatch()
	for i := range ep.Changes {
		ch := &ep.Changes[i]
		if err := store.ApplyChange(b, ch.Kind, ch.Key, ch.Value); err != nil {
			e.failStop(err)
			return err
		}
	}
	for p, off := range positions {
		b.Set(ChangelogPositionKey(p), ChangelogPositionValue(off))
	}
	if err := b.Commit(); err != nil {
		err = fmt.Errorf("engine: apply a committed epoch: %w", err)
		e.failStop(err)
		return err
	}
	c.applied = ep.End
	e.ap.pos = ep.End
	e.ap.applied.Store(ep.End)
	e.ap.records.Add(uint64(ep.Records))
	for _, s := range e.shards {
		s.SetApplied(ep.End)
	}
	e.evictKeys(ep.End)
	c.log.durable.Store(ep.End)
	e.onDurable()
	return nil
}

// ApplyStandby writes a standby copy's changes (changelog records of
// partitions this engine does not own, read up to the given positions) to
// the store with the positions, in one batch: a later owner of those
// partitions restores only what follows.
func (e *Engine) ApplyStandby(changes []Change, positions map[int32]int64) error {
	c := e.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range changes {
		if c.link.Owns(changes[i].Partition) {
			return fmt.Errorf("engine: a standby change for partition %d, which this engine owns", changes[i].Partition)
		}
	}
	b := e.st.NewBatch()
	for i := range changes {
		ch := &changes[i]
		if err := store.ApplyChange(b, ch.Kind, ch.Key, ch.Value); err != nil {
			return err
		}
	}
	for p, off := range positions {
		b.Set(ChangelogPositionKey(p), ChangelogPositionValue(off))
	}
	return b.Commit()
}

// ChangelogPosition is where the store's copy of partition p's changelog
// ends (0: nothing).
func (e *Engine) ChangelogPosition(p int32) (int64, error) {
	v, err := e.st.Get(ChangelogPositionKey(p))
	if err != nil || v == nil {
		return 0, err
	}
	return decodeChangelogPosition(v)
}

// Abort fails the engine after a transaction that did not commit: its
// acknowledgements wait forever (the callers time out), and Close does
// not wait for them. The node opens a new engine over the store.
func (e *Engine) Abort(cause error) { e.failStop(fmt.Errorf("%w: %v", ErrAborted, cause)) }

// Delivery is what Deliver did with a message.
type Delivery uint8

// Outcomes of Deliver.
const (
	// Delivered: the message is queued; a record will consume it.
	Delivered Delivery = iota
	// Duplicate: a message with the same idempotency key to the same
	// address was consumed already or is in flight; this one is dropped.
	// DuplicateOf says which.
	Duplicate
)

// Deliver hands the engine a message consumed from the cluster's input
// topic: numbered already, delivered once. With an idempotency key, a
// message whose key this address consumed already (the keys are in the
// partition's changelog) is dropped as a Duplicate; the id of the first
// is returned. ErrOverloaded: try again later.
func (e *Engine) Deliver(m format.StoredMessage, key string) (Delivery, uint64, error) {
	if e.cl == nil {
		return 0, 0, errors.New("engine: Deliver outside cluster mode")
	}
	if err := e.enter(); err != nil {
		return 0, 0, err
	}
	defer e.inflight.Done()
	if !e.cl.link.Owns(e.cl.link.Partition(format.KeyGroup(m.Env.Target.Hash()))) {
		return 0, 0, fmt.Errorf("%w: a message for %s", ErrNotOwner, m.Env.Target)
	}
	env := m.Env
	env.Ack = nil
	if key == "" {
		return Delivered, env.ID, e.push(&env)
	}
	if err := checkKey(key); err != nil {
		return 0, 0, err
	}
	ident := keyIdentity(env.Target, key)
	out, ent, id, err := e.admitKey(ident, func() (uint64, error) { return env.ID, nil })
	if err != nil {
		return 0, 0, err
	}
	if out != keyNew {
		return Duplicate, id, nil
	}
	ack := format.NewAck(1)
	ack.OnDone(func(err error) { e.settleKey(ident, ent, err) })
	env.Ack, env.Key = ack, key
	if err := e.push(&env); err != nil {
		e.settleKey(ident, ent, err)
		return 0, 0, err
	}
	return Delivered, env.ID, nil
}

// KeptReply returns the reply kept for idempotent request id (cluster
// nodes answer a retried request with it).
func (e *Engine) KeptReply(id uint64) (Message, bool, error) { return e.keptReply(id) }

// KeyOf returns the idempotency key among opts ("" without one).
func KeyOf(opts ...SendOption) string { return sendOpts(opts).key }

// ValidateIngress checks an ingress message as Send would (cluster nodes
// validate before producing it).
func (e *Engine) ValidateIngress(to Address, msg Message) error { return e.validate(to, msg) }

// NewMessageID gives a cluster node's ingress message its id.
func (e *Engine) NewMessageID() (uint64, error) { return e.newID() }

// ClusterPositions reads the changelog positions the store holds, by
// partition.
func ClusterPositions(st store.Store, partitions int32) (map[int32]int64, error) {
	out := map[int32]int64{}
	for p := range partitions {
		v, err := st.Get(ChangelogPositionKey(p))
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		off, err := decodeChangelogPosition(v)
		if err != nil {
			return nil, err
		}
		out[p] = off
	}
	return out, nil
}

// ChangelogPositionKey is the store key of partition p's changelog
// position ('M' metadata: never shipped to a changelog).
func ChangelogPositionKey(p int32) []byte { return fmt.Appendf(nil, "Mcl/%05d", p) }

// ChangelogPositionValue encodes a changelog position.
func ChangelogPositionValue(off int64) []byte { return fmt.Appendf(nil, "%d", off) }

func decodeChangelogPosition(v []byte) (int64, error) {
	var off int64
	if _, err := fmt.Sscanf(string(v), "%d", &off); err != nil || off < 0 {
		return 0, fmt.Errorf("%w: changelog position %q", store.ErrCorrupt, v)
	}
	return off, nil
}

// runClusterFlusher replaces the applier goroutine in cluster mode: the
// node applies epochs itself; this flushes the store every
// CheckpointInterval, so that a restart restores only the changelog after
// the flushed positions, and watches the data directory.
func (e *Engine) runClusterFlusher() {
	defer close(e.apDone)
	tick := time.NewTicker(e.opts.CheckpointInterval)
	defer tick.Stop()
	watch := time.NewTicker(watchInterval)
	defer watch.Stop()
	for {
		select {
		case <-tick.C:
			if err := e.st.Flush(); err != nil {
				e.failStop(err)
			}
		case <-watch.C:
			e.checkStorage()
		case <-e.apStop:
			// An engine discarded after an abort flushes too: the store
			// holds committed epochs only, and a flush spares the next
			// engine a restore of what is already here.
			if p := e.failErr.Load(); p == nil || errors.Is(*p, ErrAborted) {
				if err := e.st.Flush(); err != nil {
					e.failStop(err)
				}
			}
			return
		case <-e.apWake:
		}
	}
}

// CollectExpired adds to ep the deletions of the idempotency keys and kept
// replies of owned partitions whose retention has passed (at most limit
// expiry entries looked at), and returns how many it added. The node
// ships them to the partitions' changelogs in its transaction and the
// store receives them with the epoch (CommitEpoch), so that a restore or a
// standby copy drops them too. Entries of partitions this node does not own
// (standby copies) are left to their owner's deletions.
func (e *Engine) CollectExpired(ep *Epoch, limit int) (int, error) {
	c := e.cl
	if c == nil {
		return 0, errors.New("engine: CollectExpired outside cluster mode")
	}
	b := e.st.NewBatch()
	if _, err := e.st.Expire(b, e.now(), limit); err != nil {
		return 0, err
	}
	var index [][]byte
	err := store.RangeChanges(b, func(kind store.ChangeKind, key, _ []byte) error {
		if _, ok := store.ExpiredEntry(key); ok && kind == store.ChangeDelete {
			index = append(index, slices.Clone(key))
		}
		return nil
	})
	b.Reset()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range index {
		v, err := e.st.Get(k)
		if err != nil {
			return n, err
		}
		if len(v) != 4 {
			continue // no partition recorded: not written by a cluster engine
		}
		p := int32(binary.BigEndian.Uint32(v))
		if !c.link.Owns(p) {
			continue
		}
		target, _ := store.ExpiredEntry(k)
		ep.Changes = append(ep.Changes, Change{Partition: p, Kind: store.ChangeDelete, Key: target},
			Change{Partition: p, Kind: store.ChangeDelete, Key: k})
		n++
	}
	return n, nil
}
