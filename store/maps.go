package store

import "encoding/binary"

// Map state: each entry of a map state value is its own key, so that a
// write costs what it changes, not what the map holds (on-disk format;
// never change):
//
//	'p' kg(2, BE) address(AppendAddress) name(uvarint len + bytes) entry key -> value
//
// The entry key is the rest of the store key; entries of one map are
// contiguous and in key order.

// MapPrefix builds the prefix of every entry of map state name of an
// instance.
func MapPrefix(dst []byte, kg uint16, addrRaw, name []byte) []byte {
	dst = append(dst[:0], 'p', byte(kg>>8), byte(kg))
	dst = append(dst, addrRaw...)
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	return append(dst, name...)
}

// MapEntryKey builds the key of one entry.
func MapEntryKey(dst []byte, kg uint16, addrRaw, name, key []byte) []byte {
	return append(MapPrefix(dst, kg, addrRaw, name), key...)
}
