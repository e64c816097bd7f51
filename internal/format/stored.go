package format

import (
	"encoding/binary"
	"fmt"
)

// Stored message encoding: a pending (in-flight or delayed) message as the
// store keeps it at a checkpoint. On-disk format; never change:
//
//	u64 LE id, i64 LE fire-at (0 = deliver now), address caller, address target,
//	string type, bytes payload, u64 LE reply-to, string token,
//	[bytes trace context]   optional: absent in messages stored before traces

// AppendStoredMessage appends the stored encoding of a message whose caller
// and target are given in their raw AppendAddress encodings.
func AppendStoredMessage(dst []byte, id uint64, fireAt int64, callerRaw, targetRaw, typ, payload []byte, replyTo uint64, token, trace []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(fireAt))
	dst = append(dst, callerRaw...)
	dst = append(dst, targetRaw...)
	dst = appendBytes(dst, typ)
	dst = appendBytes(dst, payload)
	dst = binary.LittleEndian.AppendUint64(dst, replyTo)
	dst = appendBytes(dst, token)
	if len(trace) == 0 {
		return dst
	}
	return appendBytes(dst, trace)
}

// StoredMessage is a decoded stored message.
type StoredMessage struct {
	Env    Envelope
	FireAt int64
	Token  string
}

// DecodeStoredMessage decodes the stored encoding; strings and the payload
// are copied out of b.
func DecodeStoredMessage(b []byte) (StoredMessage, error) {
	d := decoder{b: b}
	var m StoredMessage
	m.Env.ID = d.u64()
	m.FireAt = int64(d.u64())
	m.Env.Caller = d.address()
	m.Env.Target = d.address()
	m.Env.Type = d.str()
	p := d.bytes()
	m.Env.ReplyTo = d.u64()
	m.Token = d.str()
	if d.err == nil && len(d.b) > 0 {
		tc, err := decodeTrace(d.bytes())
		if err != nil && d.err == nil {
			d.err = err
		}
		m.Env.Trace = tc
	}
	if d.err != nil || len(d.b) != 0 {
		return StoredMessage{}, fmt.Errorf("%w: bad stored message", ErrCorrupt)
	}
	m.Env.Payload = append([]byte(nil), p...)
	return m, nil
}

// Instance blob: all state values of one instance, as the shard's arena
// caches them (in memory only; not an on-disk format):
//
//	uvarint n, then n × (string name, u64 LE written-at, bytes value)

// BlobEntry is one decoded value of an instance blob.
type BlobEntry struct {
	Name      []byte
	WrittenAt int64
	Value     []byte
}

// DecodeBlob decodes an instance blob into dst (reused); slices alias b.
func DecodeBlob(b []byte, dst []BlobEntry) ([]BlobEntry, error) {
	d := decoder{b: b}
	dst = dst[:0]
	if len(b) == 0 {
		return dst, nil
	}
	n := d.count(10)
	for i := 0; i < n && d.err == nil; i++ {
		var e BlobEntry
		e.Name = d.bytes()
		e.WrittenAt = int64(d.u64())
		e.Value = d.bytes()
		dst = append(dst, e)
	}
	if d.err != nil {
		return dst[:0], d.err
	}
	return dst, nil
}

// AppendBlobHeader appends the entry count of an instance blob.
func AppendBlobHeader(dst []byte, n int) []byte { return binary.AppendUvarint(dst, uint64(n)) }

// AppendBlobEntry appends one value of an instance blob (after the header).
func AppendBlobEntry(dst []byte, name string, writtenAt int64, value []byte) []byte {
	dst = appendString(dst, name)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(writtenAt))
	return appendBytes(dst, value)
}
