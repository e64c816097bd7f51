package cluster

import "github.com/shardfn/shardfn/internal/format"

// Key groups map to partitions in contiguous ranges (Flink's key-group
// ranges): partition = kg * P / 4096, P a power of two up to 4096. The
// engine keeps hashing addresses to the same 4096 key groups as on one
// node, so the Pebble layout (key-group prefixed) does not change.

// PartitionOf returns the partition of key group kg among p partitions.
func PartitionOf(kg uint16, p int32) int32 { return int32(int(kg) * int(p) / format.KeyGroups) }

// PartitionOfAddress returns the partition of an address.
func PartitionOfAddress(a format.Address, p int32) int32 {
	return PartitionOf(format.KeyGroup(a.Hash()), p)
}

// KeyGroupRange returns the key groups [lo, hi) of partition q among p.
func KeyGroupRange(q, p int32) (lo, hi int) {
	n := format.KeyGroups / int(p)
	return int(q) * n, int(q+1) * n
}
