package engine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
)

// Built-in type names, as in StateFun (io.statefun.types/*). Their values
// are encoded as StateFun's protobuf wrapper messages, so embedded Go
// functions and remote functions in any StateFun SDK read each other's
// values.
const (
	TypeBool   = "io.statefun.types/bool"
	TypeInt    = "io.statefun.types/int"
	TypeLong   = "io.statefun.types/long"
	TypeFloat  = "io.statefun.types/float"
	TypeDouble = "io.statefun.types/double"
	TypeString = "io.statefun.types/string"
	// TypeBytes is raw bytes with no encoding.
	TypeBytes = "shardfn/bytes"
)

// Message is a typed value: a type name and its bytes (StateFun's
// TypedValue). Value is shared, not copied: do not mutate it after handing
// the message to the engine.
type Message struct {
	Type  string
	Value []byte
}

// String builds a TypeString message.
func String(s string) Message {
	b := make([]byte, 0, len(s)+6)
	return Message{Type: TypeString, Value: AppendStringWrapper(b, s)}
}

// Int64 builds a TypeLong message.
func Int64(v int64) Message {
	return Message{Type: TypeLong, Value: AppendLongWrapper(make([]byte, 0, 9), v)}
}

// Bytes builds a TypeBytes message.
func Bytes(b []byte) Message { return Message{Type: TypeBytes, Value: b} }

// JSON builds a message of the given type name whose bytes are v as JSON.
func JSON(typeName string, v any) (Message, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Message{}, fmt.Errorf("%w: JSON encoding of %s: %v", ErrBadMessage, typeName, err)
	}
	return Message{Type: typeName, Value: b}, nil
}

// Is reports whether the message has the given type name.
func (m Message) Is(typeName string) bool { return m.Type == typeName }

// AsString decodes a TypeString message.
func (m Message) AsString() (string, error) {
	if m.Type != TypeString {
		return "", fmt.Errorf("%w: want %s, have %q", ErrBadMessage, TypeString, m.Type)
	}
	return DecodeStringWrapper(m.Value)
}

// AsInt64 decodes a TypeLong or TypeInt message.
func (m Message) AsInt64() (int64, error) {
	switch m.Type {
	case TypeLong:
		return DecodeLongWrapper(m.Value)
	case TypeInt:
		v, err := DecodeIntWrapper(m.Value)
		return int64(v), err
	}
	return 0, fmt.Errorf("%w: want %s, have %q", ErrBadMessage, TypeLong, m.Type)
}

// DecodeJSON decodes the message's bytes as JSON into v.
func (m Message) DecodeJSON(v any) error {
	if err := json.Unmarshal(m.Value, v); err != nil {
		return fmt.Errorf("%w: %s is not valid JSON: %v", ErrBadMessage, m.Type, err)
	}
	return nil
}

// Protobuf wrapper encodings of StateFun's built-in types
// (io.statefun.sdk.types.*Wrapper, field 1). An empty encoding is the
// wrapper's default value, as protobuf has it.

// AppendStringWrapper appends StringWrapper{value: s}.
func AppendStringWrapper(dst []byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, 0x0a)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendLongWrapper appends LongWrapper{value: v} (sfixed64).
func AppendLongWrapper(dst []byte, v int64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, 0x09)
	return binary.LittleEndian.AppendUint64(dst, uint64(v))
}

// AppendIntWrapper appends IntWrapper{value: v} (sfixed32).
func AppendIntWrapper(dst []byte, v int32) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, 0x0d)
	return binary.LittleEndian.AppendUint32(dst, uint32(v))
}

// AppendBoolWrapper appends BooleanWrapper{value: v}.
func AppendBoolWrapper(dst []byte, v bool) []byte {
	if !v {
		return dst
	}
	return append(dst, 0x08, 0x01)
}

// AppendDoubleWrapper appends DoubleWrapper{value: v}.
func AppendDoubleWrapper(dst []byte, v float64) []byte {
	if v == 0 {
		return dst
	}
	dst = append(dst, 0x09)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// wrapperField scans a wrapper message for field 1 of the wanted wire type
// and returns its raw bytes; unknown fields are skipped, as protobuf does.
func wrapperField(b []byte, wire byte) ([]byte, bool, error) {
	var out []byte
	found := false
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, false, fmt.Errorf("%w: bad protobuf key", ErrBadMessage)
		}
		b = b[n:]
		field, wt := key>>3, byte(key&7)
		var val []byte
		switch wt {
		case 0:
			_, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, false, fmt.Errorf("%w: bad varint", ErrBadMessage)
			}
			val, b = b[:n], b[n:]
		case 1:
			if len(b) < 8 {
				return nil, false, fmt.Errorf("%w: short fixed64", ErrBadMessage)
			}
			val, b = b[:8], b[8:]
		case 5:
			if len(b) < 4 {
				return nil, false, fmt.Errorf("%w: short fixed32", ErrBadMessage)
			}
			val, b = b[:4], b[4:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return nil, false, fmt.Errorf("%w: bad length", ErrBadMessage)
			}
			val, b = b[n:n+int(l)], b[n+int(l):]
		default:
			return nil, false, fmt.Errorf("%w: unsupported wire type %d", ErrBadMessage, wt)
		}
		if field == 1 && wt == wire {
			out, found = val, true
		}
	}
	return out, found, nil
}

// DecodeStringWrapper decodes StringWrapper.
func DecodeStringWrapper(b []byte) (string, error) {
	v, _, err := wrapperField(b, 2)
	return string(v), err
}

// DecodeLongWrapper decodes LongWrapper.
func DecodeLongWrapper(b []byte) (int64, error) {
	v, ok, err := wrapperField(b, 1)
	if err != nil || !ok {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(v)), nil
}

// DecodeIntWrapper decodes IntWrapper.
func DecodeIntWrapper(b []byte) (int32, error) {
	v, ok, err := wrapperField(b, 5)
	if err != nil || !ok {
		return 0, err
	}
	return int32(binary.LittleEndian.Uint32(v)), nil
}

// DecodeBoolWrapper decodes BooleanWrapper.
func DecodeBoolWrapper(b []byte) (bool, error) {
	v, ok, err := wrapperField(b, 0)
	if err != nil || !ok {
		return false, err
	}
	x, _ := binary.Uvarint(v)
	return x != 0, nil
}
