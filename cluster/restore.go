package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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
		e.Abort(errors.New("the node's partitions changed"))
		_ = e.Close()
	}
	n.changed.Store(false)
	n.member, n.gen = n.sess.Client().GroupMetadata()
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
		Reply:      n.sendReply,
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
	n.log.Info("engine open over the owned partitions", "owned", ranges(n.Owned()), "pause", d.String())
	return nil
}

// restore brings the store's copy of every owned partition up to the end
// of its changelog (read committed), from the position the store holds.
func (n *Node) restore(dir string, owned []bool) error {
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
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Minute)
	defer cancel()
	ends, err := n.changelogEnds(ctx, owned)
	if err != nil {
		return err
	}
	from := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end <= pos[p] {
			delete(ends, p)
			continue
		}
		from[p] = kgo.NewOffset().At(pos[p])
	}
	if len(from) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{n.topics.Changelog: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}, n.cfg.ClientOpts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	b := st.NewBatch()
	var restored uint64
	for len(ends) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cluster: restore did not reach the changelog's end: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("cluster: restore %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := ends[r.Partition]
			if !ok || r.Offset >= end || ferr != nil {
				return
			}
			if !r.Attrs.IsControl() {
				kind, k, v, err := decodeChange(r)
				if err == nil {
					err = store.ApplyChange(b, kind, k, v)
				}
				if err != nil {
					ferr = err
					return
				}
				restored++
			}
			if r.Offset+1 >= end {
				b.Set(engine.ChangelogPositionKey(r.Partition), engine.ChangelogPositionValue(end))
				delete(ends, r.Partition)
			}
		})
		if ferr != nil {
			return ferr
		}
		if b.Len() > 4096 || len(ends) == 0 {
			if err := b.Commit(); err != nil {
				return err
			}
			b.Reset()
		}
	}
	if err := st.Flush(); err != nil {
		return err
	}
	n.stats.Restored.Add(restored)
	n.stats.RestoreNanos.Add(int64(time.Since(start)))
	n.log.Info("restored changelog", "partitions", len(from), "records", restored, "took", time.Since(start).String())
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
			return nil, fmt.Errorf("cluster: changelog stable offsets: %w", err)
		}
		hwm, err := n.adm.ListEndOffsets(ctx, n.topics.Changelog)
		if err == nil {
			err = hwm.Error()
		}
		if err != nil {
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
