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
//	't' id(8, BE)                                                -> stored message (shard.AppendStoredMessage)
//	'm' id(8, BE)                                                -> stored message (pending at the checkpoint)
//	'e' name(uvarint len + bytes) offset(8, BE)                   -> source address, type (uvarint len + bytes), payload
//	'f' function type                                             -> remembered remote specs (engine's encoding)
//	'M' "checkpoint"                                              -> checkpoint metadata (EncodeMeta)
//	'M' "boot"                                                    -> boot number (2, LE)
//
// Safe for concurrent use: readers (LoadInstance, ReadEgress, Get) from any
// goroutine; one writer at a time through Batch.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shardfn/shardfn/shard"
)

// Errors.
var (
	ErrClosed  = errors.New("store: closed")
	ErrCorrupt = errors.New("store: corrupt data")
)

// Store is the contract both implementations keep.
type Store interface {
	shard.StateReader
	// NewBatch starts a write batch (one writer at a time).
	NewBatch() Batch
	// ReadEgress calls fn with up to max records of egress name from
	// offset, in order, until fn returns false.
	ReadEgress(name string, from uint64, max int, fn func(offset uint64, rec []byte) bool) error
	// Scan calls fn for every key with the given one-byte prefix ('t', 'm',
	// 'f'), in key order.
	Scan(prefix byte, fn func(key, value []byte) error) error
	// Get returns a metadata value ('M' keys), or nil.
	Get(key []byte) ([]byte, error)
	// Flush makes everything committed so far durable.
	Flush() error
	// Metrics returns implementation metrics as name/value pairs.
	Metrics() map[string]float64
	Close() error
}

// Batch is a set of writes committed atomically and visible to readers once
// Commit returns. Not safe for concurrent use.
type Batch interface {
	SetState(kg uint16, addrRaw, name []byte, writtenAt int64, value []byte)
	DeleteState(kg uint16, addrRaw, name []byte)
	PutTimer(id uint64, msg []byte)
	DeleteTimer(id uint64)
	PutEgress(name []byte, offset uint64, sourceRaw, typ, payload []byte)
	// ReplacePending deletes every 'm' key; PutPending adds one.
	ReplacePending()
	PutPending(id uint64, msg []byte)
	Set(key, value []byte)
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

// AppendEgressValue encodes an egress record value.
func AppendEgressValue(dst, sourceRaw, typ, payload []byte) []byte {
	dst = append(dst, sourceRaw...)
	dst = binary.AppendUvarint(dst, uint64(len(typ)))
	dst = append(dst, typ...)
	return append(dst, payload...)
}

// DecodeEgressValue decodes an egress record value; slices alias v.
func DecodeEgressValue(v []byte) (source shard.Address, typ, payload []byte, err error) {
	source, rest, err := shard.DecodeAddressPrefix(v)
	if err != nil {
		return source, nil, nil, fmt.Errorf("%w: egress record: %v", ErrCorrupt, err)
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n {
		return source, nil, nil, fmt.Errorf("%w: egress record type", ErrCorrupt)
	}
	return source, rest[k : k+int(n)], rest[k+int(n):], nil
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

// MetaKey and BootKey are the metadata keys.
var (
	MetaKey = []byte("Mcheckpoint")
	BootKey = []byte("Mboot")
)

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
