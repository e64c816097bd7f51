package format

import "strings"

// KeyGroups is the number of key groups addresses hash to. Persisted data is
// partitioned by key group, not by shard, so that a restart with another shard
// count only remaps key groups. On-disk format; never change.
const KeyGroups = 4096

// Address names one virtual function instance: namespace/type/id. The pair
// Namespace/Type is the function type; ID is the instance key. The zero
// Address means "none" (for example the caller of an ingress message).
type Address struct {
	Namespace string
	Type      string
	ID        string
}

// IsZero reports whether a is the zero Address.
func (a Address) IsZero() bool { return a.Namespace == "" && a.Type == "" && a.ID == "" }

// String returns "namespace/type/id".
func (a Address) String() string { return a.Namespace + "/" + a.Type + "/" + a.ID }

// FunctionType returns "namespace/type".
func (a Address) FunctionType() string { return a.Namespace + "/" + a.Type }

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// Hash returns a 64-bit FNV-1a hash of the address (fields separated by a
// zero byte). It decides the key group, so it is part of the on-disk format:
// never change it.
func (a Address) Hash() uint64 {
	h := fnvString(fnvOffset, a.Namespace)
	h ^= 0
	h *= fnvPrime
	h = fnvString(h, a.Type)
	h ^= 0
	h *= fnvPrime
	h = fnvString(h, a.ID)
	// Final avalanche (splitmix64 finaliser) so that low bits are well mixed.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// KeyGroup returns the key group of an address hash.
func KeyGroup(hash uint64) uint16 { return uint16(hash % KeyGroups) }

// ShardOf maps a key group to one of n shards: contiguous ranges of key
// groups, as Flink assigns them to operator instances.
func ShardOf(kg uint16, n int) int { return int(kg) * n / KeyGroups }

// AppendAddress appends a length-prefixed encoding of a to dst. The encoding
// is used inside log records and store keys (on-disk format; never change):
// uvarint(len(ns)) ns uvarint(len(type)) type uvarint(len(id)) id.
func AppendAddress(dst []byte, a Address) []byte {
	dst = appendString(dst, a.Namespace)
	dst = appendString(dst, a.Type)
	return appendString(dst, a.ID)
}

// ParseTypeName splits "namespace/name" at the last '/'.
func ParseTypeName(s string) (ns, name string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// HashRaw returns Address.Hash of an address given in its AppendAddress
// encoding, without decoding it. ok is false for a malformed encoding.
func HashRaw(raw []byte) (h uint64, ok bool) {
	h = fnvOffset
	d := decoder{b: raw}
	for i := 0; i < 3; i++ {
		f := d.bytes()
		if d.err != nil {
			return 0, false
		}
		if i > 0 {
			h ^= 0
			h *= fnvPrime
		}
		for _, c := range f {
			h ^= uint64(c)
			h *= fnvPrime
		}
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h, true
}
