package format

import (
	"encoding/binary"
	"fmt"
)

// Egress record value, as the store keeps one record of an egress log
// (on-disk format; never change):
//
//	address source (AppendAddress), uvarint len + type, payload (the rest)

// AppendEgressValue encodes an egress record value.
func AppendEgressValue(dst, sourceRaw, typ, payload []byte) []byte {
	dst = append(dst, sourceRaw...)
	dst = binary.AppendUvarint(dst, uint64(len(typ)))
	dst = append(dst, typ...)
	return append(dst, payload...)
}

// DecodeEgressValue decodes an egress record value; slices alias v.
func DecodeEgressValue(v []byte) (source Address, typ, payload []byte, err error) {
	source, rest, err := DecodeAddressPrefix(v)
	if err != nil {
		return source, nil, nil, fmt.Errorf("egress record: %w", err)
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n {
		return source, nil, nil, fmt.Errorf("%w: egress record type", ErrCorrupt)
	}
	return source, rest[k : k+int(n)], rest[k+int(n):], nil
}
