package store

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Changes: cluster mode ships what the applier writes to the store, one
// raw operation at a time, to a compacted Kafka changelog, and replays
// those operations into the store of whichever node owns the partition.
// An operation is the store's own bytes (key, value) so that a replayed
// changelog and a locally applied epoch converge on the same store.

// ChangeKind is the kind of one raw store operation.
type ChangeKind uint8

// Kinds of raw store operations.
const (
	ChangeSet ChangeKind = iota + 1
	ChangeDelete
	// ChangeDeleteRange deletes [Key, Value) (a cleared map).
	ChangeDeleteRange
)

// ErrNotRecording: the batch does not record its operations (an in-memory
// store; cluster mode needs Pebble).
var ErrNotRecording = errors.New("store: this store's batches cannot list their operations (cluster mode needs a data directory)")

// RangeChanges calls fn with each operation of b in the order it applies
// them (after ordering the kept point writes as Commit would), without
// committing b. It fails with ErrNotRecording for a batch that cannot.
func RangeChanges(b Batch, fn func(kind ChangeKind, key, value []byte) error) error {
	pb, ok := b.(*pebbleBatch)
	if !ok {
		return ErrNotRecording
	}
	pb.flushOps()
	r := pb.b.Reader()
	for {
		kind, key, value, ok, err := r.Next()
		if err != nil {
			return fmt.Errorf("store: read batch: %w", err)
		}
		if !ok {
			return nil
		}
		var k ChangeKind
		switch kind {
		case pebble.InternalKeyKindSet:
			k = ChangeSet
		case pebble.InternalKeyKindDelete:
			k = ChangeDelete
		case pebble.InternalKeyKindRangeDelete:
			k = ChangeDeleteRange
		default:
			return fmt.Errorf("store: batch operation of kind %v cannot be shipped", kind)
		}
		if err := fn(k, key, value); err != nil {
			return err
		}
	}
}

// ApplyChange adds one raw operation to b (a changelog record replayed).
func ApplyChange(b Batch, kind ChangeKind, key, value []byte) error {
	pb, ok := b.(*pebbleBatch)
	if !ok {
		return ErrNotRecording
	}
	switch kind {
	case ChangeSet:
		pb.set(key, value)
	case ChangeDelete:
		pb.del(key)
	case ChangeDeleteRange:
		pb.flushOps() // the range deletes what came before it, not after
		if err := pb.b.DeleteRange(key, value, nil); err != nil {
			return fmt.Errorf("store: delete range: %w", err)
		}
	default:
		return fmt.Errorf("%w: change of kind %d", ErrCorrupt, kind)
	}
	return nil
}
