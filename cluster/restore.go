package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/store"
)

// reopen (re)starts the engine over the partitions the group assigned:
// close the old one (nothing uncommitted is in the store), restore the
// changelog of every partition newly owned, open a new engine.
func (n *Node) reopen() error {
	start := time.Now()
	n.ready.Store(false)
	if e := n.eng.Swap(nil); e != nil {
		// What it appended since the last commit is discarded: delayed
		// messages fire again from the store, input is read again from
		// the committed offsets.
		n.closeEngine(e, errors.New("the node's partitions changed"))
	}
	n.changed.Store(false)
	n.member, n.gen = n.sess.Client().GroupMetadata()
	n.syncAssignment()
	synced := time.Since(start)
	owned := *n.owned.Load()
	dir := n.cfg.Engine.DataDir
	if err := n.restore(filepath.Join(dir, "store"), owned); err != nil {
		n.changed.Store(true)
		return err
	}
	opts := n.cfg.Engine
	if opts.Logger == nil {
		opts.Logger = n.log
	}
	opts.Cluster = &engine.ClusterLink{
		Partition:  func(kg uint16) int32 { return PartitionOf(kg, n.parts) },
		Owns:       func(p int32) bool { return int(p) < len(owned) && owned[p] },
		ReserveIDs: n.reserveIDs,
		Appended: func(uint64) {
			select {
			case n.wake <- struct{}{}:
			default:
			}
		},
	}
	e, err := engine.Open(opts, n.cfg.Specs...)
	if err != nil {
		n.changed.Store(true)
		return fmt.Errorf("cluster: open engine: %w", err)
	}
	n.adopted.Store(&owned)
	n.eng.Store(e)
	n.ready.Store(true)
	n.stats.Restarts.Add(1)
	d := time.Since(start)
	n.stats.LastPauseNanos.Store(int64(d))
	if int64(d) > n.stats.MaxPauseNanos.Load() {
		n.stats.MaxPauseNanos.Store(int64(d))
	}
	n.log.Info("engine open over the owned partitions", "owned", ranges(n.Owned()), "pause", d.String(), "of_which_group_sync", synced.String())
	return nil
}

// restore brings the store's copy of every owned partition up to the end
// of its changelog (read committed), from the position the store holds.
func (n *Node) restore(dir string, owned []bool) (err error) {
	start := time.Now()
	st, err := store.OpenPebble(dir, store.PebbleOptions{Logger: n.log})
	if err != nil {
		return fmt.Errorf("cluster: open store for restore: %w", err)
	}
	defer st.Close()
	pos, err := engine.ClusterPositions(st, n.parts)
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			err = n.loadInputPositions(st)
		}
	}()
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Minute)
	defer cancel()
	ends, err := n.changelogEnds(ctx, owned)
	if err != nil {
		return err
	}
	cl := n.sess.Client()
	var restored uint64
	parts := 0
	b := st.NewBatch()
	for p, end := range ends {
		if end <= pos[p] {
			continue
		}
		parts++
		err := n.readChangelog(ctx, cl, p, pos[p], end, func(r *kgo.Record) error {
			kind, k, v, err := decodeChange(r)
			if err == nil {
				err = store.ApplyChange(b, kind, k, v)
			}
			restored++
			if err == nil && b.Len() > 4096 {
				err = b.Commit()
				b.Reset()
			}
			return err
		})
		if err != nil {
			return err
		}
		b.Set(engine.ChangelogPositionKey(p), engine.ChangelogPositionValue(end))
		if err := b.Commit(); err != nil {
			return err
		}
		b.Reset()
	}
	n.noteRestore(pos, ends) // warm-up (warmup.go)
	if parts == 0 {
		return nil
	}
	if err := st.Flush(); err != nil {
		return err
	}
	n.stats.Restored.Add(restored)
	n.stats.RestoreNanos.Add(int64(time.Since(start)))
	n.log.Info("restored changelog", "partitions", parts, "records", restored, "took", time.Since(start).String())
	return nil
}

// changelogEnds returns where the restore of each owned partition ends: the
// changelog's end once no transaction is open on it. A previous owner may
// still be ending its last transaction (or have died in one): reading only
// up to the last stable offset then would miss that transaction's
// changes, committed a moment later together with its input offsets. So
// the restore waits until the last stable offset reaches the high
// watermark (every transaction on the partition resolved), at most twice
// the transaction timeout, after which the broker has aborted a dead
// owner's transaction.
func (n *Node) changelogEnds(ctx context.Context, owned []bool) (map[int32]int64, error) {
	deadline := time.Now().Add(2*n.cfg.TxnTimeout + 5*time.Second)
	for {
		lso, err := n.adm.ListCommittedOffsets(ctx, n.topics.Changelog)
		if err == nil {
			err = lso.Error()
		}
		if err != nil {
			if retriable(err) && time.Now().Before(deadline) { // a broker restarting
				n.log.Info("changelog stable offsets not available yet; retrying", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return nil, fmt.Errorf("cluster: changelog stable offsets: %w", err)
		}
		hwm, err := n.adm.ListEndOffsets(ctx, n.topics.Changelog)
		if err == nil {
			err = hwm.Error()
		}
		if err != nil {
			if retriable(err) && time.Now().Before(deadline) {
				n.log.Info("changelog end offsets not available yet; retrying", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return nil, fmt.Errorf("cluster: changelog end offsets: %w", err)
		}
		ends := map[int32]int64{}
		open := []int32{}
		lso.Each(func(o kadm.ListedOffset) {
			p := o.Partition
			if int(p) >= len(owned) || !owned[p] {
				return
			}
			ends[p] = o.Offset
			if h, ok := hwm.Lookup(n.topics.Changelog, p); ok && h.Offset > o.Offset {
				open = append(open, p)
			}
		})
		if len(open) == 0 {
			return ends, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster: a transaction stays open on changelog partitions %v for more than %v; its producer is alive and not ending it", open, 2*n.cfg.TxnTimeout+5*time.Second)
		}
		n.log.Info("waiting for an open transaction on changelog partitions to end before restoring them", "partitions", fmt.Sprint(open))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readChangelog calls fn with every committed record of changelog
// partition p in [from, end), in order. It fetches with raw read_committed
// fetch requests and follows the fetch position itself: a transaction
// aborted without a marker (a broker restarted from its files with a
// transaction open) is skipped by the fetch position, where a consumer that
// only sees records could not tell that it had reached end.
func (n *Node) readChangelog(ctx context.Context, cl *kgo.Client, p int32, from, end int64, fn func(*kgo.Record) error) error {
	_, err := n.readChangelogUpTo(ctx, cl, p, from, end, 0, fn)
	return err
}

// readChangelogUpTo is readChangelog that stops after the fetch that
// passes budget records (0: no budget) and returns the offset it reached
// (where the next read starts).
func (n *Node) readChangelogUpTo(ctx context.Context, cl *kgo.Client, p int32, from, end int64, budget int, fn func(*kgo.Record) error) (int64, error) {
	topic := n.topics.Changelog
	seen := 0
	off := from
	for off < end && (budget == 0 || seen < budget) {
		if err := ctx.Err(); err != nil {
			return off, fmt.Errorf("cluster: restore of %s/%d stopped at offset %d of %d: %w", topic, p, off, end, err)
		}
		td, err := n.adm.ListTopics(ctx, topic)
		if err != nil {
			return off, fmt.Errorf("cluster: restore: metadata of %s: %w", topic, err)
		}
		d := td[topic]
		pd, ok := d.Partitions[p]
		if d.Err != nil || !ok || pd.Leader < 0 {
			time.Sleep(100 * time.Millisecond) // no leader yet
			continue
		}
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 200, 1, 32<<20
		req.IsolationLevel = 1 // read_committed
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, d.ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, off, 16<<20
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(pd.Leader)))
		if err != nil {
			n.log.Warn("restore fetch failed; retrying", "partition", p, "offset", off, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		next := off
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				rp := &resp.Topics[i].Partitions[j]
				if rp.Partition != p {
					continue
				}
				fp, o := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{KeepControlRecords: true, Offset: off,
					IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: p}, rp, kgo.DefaultDecompressor(), nil)
				if fp.Err != nil {
					n.log.Warn("restore fetch failed; retrying", "partition", p, "offset", off, "err", fp.Err)
					continue
				}
				for _, r := range fp.Records {
					if r.Offset >= end {
						break
					}
					if r.Attrs.IsControl() {
						continue
					}
					if err := fn(r); err != nil {
						return off, err
					}
					seen++
				}
				next = max(next, o)
			}
		}
		if next == off {
			time.Sleep(20 * time.Millisecond) // nothing yet: the broker answered before its wait
		}
		// A fetch may go past end; what is past end was not applied.
		off = min(next, end)
	}
	return off, nil
}

// loadInputPositions reads the applied input position of every partition
// from the store (restored with the changelog).
func (n *Node) loadInputPositions(st store.Store) error {
	pos := make([]int64, n.parts)
	for p := range n.parts {
		v, err := st.Get(inputPositionKey(p))
		if err != nil {
			return err
		}
		if v == nil {
			continue
		}
		off, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: input position of partition %d: %q", store.ErrCorrupt, p, v)
		}
		pos[p] = off
	}
	n.inPos = pos
	return nil
}

// syncAssignment replaces the node's view of its assignment with the
// group's own (its description, once the group is stable): the revocation
// callbacks alone can miss one (the transaction session does not pass on
// a second revocation before the transaction ends), and an engine that
// believed it owned a partition another node owns would fire its delayed
// messages. Without a stable description within 2 s the callbacks'
// view stands (and commits are still fenced by the generation).
func (n *Node) syncAssignment() {
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	member, _ := n.sess.Client().GroupMetadata()
	for ctx.Err() == nil {
		ds, err := n.adm.DescribeGroups(ctx, "shardfn-"+n.cfg.Name)
		if err == nil && ds.Error() == nil {
			for _, g := range ds {
				if g.State != "Stable" {
					continue
				}
				for _, m := range g.Members {
					if m.MemberID != member {
						continue
					}
					a, ok := m.Assigned.AsConsumer()
					if !ok {
						continue
					}
					owned := make([]bool, n.parts)
					for _, t := range a.Topics {
						if t.Topic != n.topics.In {
							continue
						}
						for _, p := range t.Partitions {
							if p >= 0 && p < n.parts {
								owned[p] = true
							}
						}
					}
					n.assignMu.Lock()
					if old := *n.owned.Load(); !slices.Equal(old, owned) {
						n.log.Info("assignment taken from the group's description", "callbacks_had", count(old), "group_has", count(owned))
					}
					n.owned.Store(&owned)
					n.assignMu.Unlock()
					return
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// retriable reports whether err (from kadm, possibly per partition) is a
// broker error a retry may clear (not leader, coordinator loading).
func retriable(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke) && ke.Retriable
}
