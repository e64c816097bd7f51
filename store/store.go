// Package store is the engine's materialised view of the write-ahead log:
// state values per instance, durable delayed messages (timers), egress logs,
// the in-flight messages of the last checkpoint, remembered remote state
// specs and checkpoint metadata.
//
// Two implementations share one contract: Pebble (durable, package
// github.com/cockroachdb/pebble/v2) and Memory (tests and the in-memory
// engine). The engine's applier is the only writer: it applies effect
// records in log order through Batch, so every write is idempotent "set key
// to value" or "delete key", which makes replaying a log suffix over a newer
// store state converge to the same result.
//
// Key layout (on-disk format; never change):
//
//	's' kg(2, BE) address(AppendAddress) name(uvarint len + bytes) -> writtenAt(8, LE) value
//	't' id(8, BE)                                                -> stored message (format.AppendStoredMessage)
//	'm' id(8, BE)                                                -> stored message (pending at the checkpoint)
//	'p' kg(2, BE) address name(uvarint len + bytes) entry key     -> value (an entry of a map state; maps.go)
//	'e' name(uvarint len + bytes) offset(8, BE)                   -> egress record (format.AppendEgressValue)
//	'f' function type                                             -> remembered remote specs (engine's encoding)
//	'M' "checkpoint"                                              -> checkpoint metadata (EncodeMeta)
//	'M' "ids"                                                     -> end of the message id reservation (8, LE; package engine)
//	'M' "boot"                                                    -> boot number (2, LE), in stores written before "ids"
//
// Safe for concurrent use: readers (LoadInstance, ReadEgress, Get) from any
// goroutine; one writer at a time through Batch.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors.
var (
	ErrClosed  = errors.New("store: closed")
	ErrCorrupt = errors.New("store: corrupt data")
)

// Store is the contract both implementations keep.
type Store interface {
	// LoadInstance calls fn once per stored state value of an instance
	// (kg is its key group, addrRaw its format.AppendAddress encoding).
	LoadInstance(kg uint16, addrRaw []byte, fn func(name []byte, writtenAt int64, value []byte)) error
	// LoadMap calls fn with every entry of map state name of an instance,
	// in key order, until fn returns false.
	LoadMap(kg uint16, addrRaw, name []byte, fn func(key, value []byte) bool) error
	// NewBatch starts a write batch (one writer at a time).
	NewBatch() Batch
	// ReadEgress calls fn with up to max records of egress name from
	// offset, in order, until fn returns false.
	ReadEgress(name string, from uint64, max int, fn func(offset uint64, rec []byte) bool) error
	// ScanTimers calls fn for every stored delayed message, in id order.
	ScanTimers(fn func(id uint64, msg []byte) error) error
	// ScanPending calls fn for every in-flight message of the last
	// checkpoint, in id order.
	ScanPending(fn func(id uint64, msg []byte) error) error
	// ScanSpecs calls fn for every remembered remote spec list, by function
	// type name ("namespace/type").
	ScanSpecs(fn func(fnType string, specs []byte) error) error
	// GetKey returns the remembered idempotency key with hash h.
	GetKey(h uint64) (KeyEntry, bool, error)
	// GetReply returns the reply kept for request id.
	GetReply(id uint64) (KeptReply, bool, error)
	// Expire adds to b the deletion of every idempotency key and kept
	// reply that expired at now (unix ns), at most max of them, and returns
	// how many.
	Expire(b Batch, now int64, max int) (int, error)
	// Get returns a metadata value ('M' keys), or nil.
	Get(key []byte) ([]byte, error)
	// Flush makes everything committed so far durable. It fails, rather
	// than waits, once the store has reported a background error.
	Flush() error
	// Err is the first background error (a flush or compaction that
	// failed), after which the store cannot make writes durable.
	Err() error
	// Metrics returns implementation metrics as name/value pairs.
	Metrics() map[string]float64
	Close() error
}

// Batch is a set of writes committed atomically and visible to readers once
// Commit returns. Not safe for concurrent use.
type Batch interface {
	SetState(kg uint16, addrRaw, name []byte, writtenAt int64, value []byte)
	DeleteState(kg uint16, addrRaw, name []byte)
	// SetMapEntry, DeleteMapEntry and ClearMap write entries of map state
	// name of an instance.
	SetMapEntry(kg uint16, addrRaw, name, key, value []byte)
	DeleteMapEntry(kg uint16, addrRaw, name, key []byte)
	ClearMap(kg uint16, addrRaw, name []byte)
	PutTimer(id uint64, msg []byte)
	DeleteTimer(id uint64)
	PutEgress(name []byte, offset uint64, sourceRaw, typ, payload []byte)
	// ReplacePending deletes every 'm' key; PutPending adds one.
	ReplacePending()
	PutPending(id uint64, msg []byte)
	Set(key, value []byte)
	// PutSpecs remembers the encoded remote specs of a function type.
	PutSpecs(fnType string, specs []byte)
	// PutKey remembers an idempotency key (hash h of its identity) until
	// expireAt; PutReply keeps the reply of request id until expireAt.
	PutKey(h uint64, expireAt int64, id uint64, identity []byte)
	PutReply(id uint64, expireAt int64, typ, payload []byte)
	// Delete deletes a key (expiry).
	Delete(key []byte)
	Commit() error
	// Reset empties the batch for reuse after Commit.
	Reset()
	Len() int
}

// Key builders. dst is reused.

// StateKey builds the key of one state value.
func StateKey(dst []byte, kg uint16, addrRaw, name []byte) []byte {
	dst = append(dst[:0], 's', byte(kg>>8), byte(kg))
	dst = append(dst, addrRaw...)
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	return append(dst, name...)
}

// InstancePrefix builds the prefix of every state key of an instance.
func InstancePrefix(dst []byte, kg uint16, addrRaw []byte) []byte {
	dst = append(dst[:0], 's', byte(kg>>8), byte(kg))
	return append(dst, addrRaw...)
}

// IDKey builds a 't' or 'm' key.
func IDKey(dst []byte, prefix byte, id uint64) []byte {
	dst = append(dst[:0], prefix)
	return binary.BigEndian.AppendUint64(dst, id)
}

// EgressPrefix builds the prefix of an egress log's keys.
func EgressPrefix(dst []byte, name []byte) []byte {
	dst = append(dst[:0], 'e')
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	return append(dst, name...)
}

// EgressKey builds the key of one egress record.
func EgressKey(dst []byte, name []byte, offset uint64) []byte {
	dst = EgressPrefix(dst, name)
	return binary.BigEndian.AppendUint64(dst, offset)
}

// splitStateKeyName returns the state name of a state key given the length
// of its instance prefix.
func splitStateKeyName(key []byte, prefixLen int) ([]byte, error) {
	rest := key[prefixLen:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) != n {
		return nil, fmt.Errorf("%w: state key", ErrCorrupt)
	}
	return rest[k:], nil
}

// Checkpoint metadata.

// Meta is the content of the checkpoint record.
type Meta struct {
	// LSN is the log position the checkpoint covers: the store holds the
	// effects of every record before it, and recovery replays from it.
	LSN uint64
	// Egress is the next offset of each egress log at LSN.
	Egress map[string]uint64
}

// MetaKey is the key of the checkpoint metadata.
var MetaKey = []byte("Mcheckpoint")

// idScan turns a scan of 9-byte id keys ('t', 'm') into calls with the id.
func idScan(fn func(id uint64, v []byte) error) func(k, v []byte) error {
	return func(k, v []byte) error {
		if len(k) != 9 {
			return fmt.Errorf("%w: key %q of %d bytes, want 9", ErrCorrupt, k[:1], len(k))
		}
		return fn(binary.BigEndian.Uint64(k[1:]), v)
	}
}

// specScan turns a scan of 'f' keys into calls with the function type.
func specScan(fn func(fnType string, v []byte) error) func(k, v []byte) error {
	return func(k, v []byte) error { return fn(string(k[1:]), v) }
}

// EncodeMeta encodes checkpoint metadata (on-disk format; never change):
// u8 version(1), u64 LE lsn, uvarint n, n × (string name, u64 LE next).
func EncodeMeta(m Meta) []byte {
	b := []byte{1}
	b = binary.LittleEndian.AppendUint64(b, m.LSN)
	b = binary.AppendUvarint(b, uint64(len(m.Egress)))
	for name, next := range m.Egress {
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint64(b, next)
	}
	return b
}

// DecodeMeta decodes checkpoint metadata.
func DecodeMeta(b []byte) (Meta, error) {
	m := Meta{Egress: map[string]uint64{}}
	if len(b) < 9 || b[0] != 1 {
		return m, fmt.Errorf("%w: checkpoint metadata header", ErrCorrupt)
	}
	m.LSN = binary.LittleEndian.Uint64(b[1:])
	b = b[9:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return m, fmt.Errorf("%w: checkpoint metadata count", ErrCorrupt)
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l+8 {
			return m, fmt.Errorf("%w: checkpoint metadata entry %d", ErrCorrupt, i)
		}
		name := string(b[k : k+int(l)])
		b = b[k+int(l):]
		m.Egress[name] = binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	return m, nil
}
