package store

import (
	"encoding/binary"
	"fmt"
)

// Idempotency keys and kept replies (see engine/idempotency.go):
//
//	'i' hash(8, BE)                          -> expire-at(8, LE) message id(8, LE) identity (the rest)
//	'r' request id(8, BE)                    -> expire-at(8, LE) uvarint len + type, payload (the rest)
//	'x' expire-at(8, BE) kind('i'|'r') k(8, BE) -> empty: the expiry index of both
//
// The identity is the target address (format.AppendAddress) followed by the
// key, so that two keys whose hashes collide are told apart.

// KeyEntry is a remembered idempotency key.
type KeyEntry struct {
	ExpireAt int64
	ID       uint64
	Identity []byte
}

// KeptReply is a reply kept for an idempotent request.
type KeptReply struct {
	ExpireAt int64
	Type     []byte
	Payload  []byte
}

func keyKey(dst []byte, h uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst[:0], 'i'), h)
}

func replyKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst[:0], 'r'), id)
}

func expiryKey(dst []byte, expireAt int64, kind byte, k uint64) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst[:0], 'x'), uint64(max(expireAt, 0)))
	dst = append(dst, kind)
	return binary.BigEndian.AppendUint64(dst, k)
}

func appendKeyValue(dst []byte, expireAt int64, id uint64, identity []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(expireAt))
	dst = binary.LittleEndian.AppendUint64(dst, id)
	return append(dst, identity...)
}

func decodeKeyValue(v []byte) (KeyEntry, error) {
	if len(v) < 16 {
		return KeyEntry{}, fmt.Errorf("%w: idempotency key value of %d bytes", ErrCorrupt, len(v))
	}
	return KeyEntry{
		ExpireAt: int64(binary.LittleEndian.Uint64(v)),
		ID:       binary.LittleEndian.Uint64(v[8:]),
		Identity: append([]byte(nil), v[16:]...),
	}, nil
}

func appendReplyValue(dst []byte, expireAt int64, typ, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(expireAt))
	dst = binary.AppendUvarint(dst, uint64(len(typ)))
	dst = append(dst, typ...)
	return append(dst, payload...)
}

func decodeReplyValue(v []byte) (KeptReply, error) {
	if len(v) < 8 {
		return KeptReply{}, fmt.Errorf("%w: kept reply of %d bytes", ErrCorrupt, len(v))
	}
	r := KeptReply{ExpireAt: int64(binary.LittleEndian.Uint64(v))}
	rest := v[8:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n {
		return KeptReply{}, fmt.Errorf("%w: kept reply type", ErrCorrupt)
	}
	r.Type = append([]byte(nil), rest[k:k+int(n)]...)
	r.Payload = append([]byte(nil), rest[k+int(n):]...)
	return r, nil
}

// expired decodes an expiry index key into the key it names.
func expired(k []byte) (key []byte, ok bool) {
	if len(k) != 18 {
		return nil, false
	}
	switch k[9] {
	case 'i':
		return keyKey(nil, binary.BigEndian.Uint64(k[10:])), true
	case 'r':
		return replyKey(nil, binary.BigEndian.Uint64(k[10:])), true
	}
	return nil, false
}

// Expiry index kinds: an idempotency key ('i', by identity hash) and a kept
// reply ('r', by request id).
const (
	ExpiryKey   byte = 'i'
	ExpiryReply byte = 'r'
)

// ExpiryIndexKey is the expiry index entry of an idempotency key or kept
// reply: the store deletes both when expireAt passes (Store.Expire).
// Cluster engines set its value to the entry's partition (4 bytes, big
// endian), so that a node can ship the deletions to that partition's
// changelog.
func ExpiryIndexKey(dst []byte, expireAt int64, kind byte, k uint64) []byte {
	return expiryKey(dst, expireAt, kind, k)
}

// ExpiredEntry returns, for an expiry index entry's key, the key of the
// idempotency key or kept reply it expires.
func ExpiredEntry(index []byte) ([]byte, bool) {
	if len(index) == 0 || index[0] != 'x' {
		return nil, false
	}
	return expired(index)
}
