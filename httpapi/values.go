package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shardfn/shardfn/engine"
)

// stateInput is one value written through the admin state API. Exactly one
// of Value, Text and ValueB64 is set:
//
//   - "value": JSON. Built-in types take their JSON form (a string, an
//     integer, a number, true/false) and are stored in StateFun's wrapper
//     encoding; any other type stores the JSON bytes themselves.
//   - "text": the value as a person types it. A string type stores the
//     text; long, int, float, double and bool parse it; any other type
//     stores its UTF-8 bytes.
//   - "value_b64": the stored bytes, in standard base64.
//
// "type" is needed only for remote states registered without a type; when
// given for a typed state it must match.
type stateInput struct {
	Value    json.RawMessage `json:"value,omitempty"`
	Text     *string         `json:"text,omitempty"`
	ValueB64 *string         `json:"value_b64,omitempty"`
	Type     string          `json:"type,omitempty"`
}

// untyped reports whether a spec type leaves the value's type open.
func untyped(t string) bool { return t == "" || t == "io.statefun.types/unset" }

// encodeStateInput turns an input into the stored message for a state
// declared with specType.
func encodeStateInput(name, specType string, in stateInput) (engine.Message, error) {
	typ := specType
	if untyped(typ) {
		if in.Type == "" {
			return engine.Message{}, fmt.Errorf("state %q has no declared type: give \"type\" with the value", name)
		}
		typ = in.Type
	} else if in.Type != "" && in.Type != specType {
		return engine.Message{}, fmt.Errorf("state %q is declared as %q, not %q", name, specType, in.Type)
	}
	n := 0
	if in.Value != nil {
		n++
	}
	if in.Text != nil {
		n++
	}
	if in.ValueB64 != nil {
		n++
	}
	if n != 1 {
		return engine.Message{}, fmt.Errorf("state %q: give exactly one of \"value\" (JSON), \"text\" or \"value_b64\"", name)
	}
	switch {
	case in.ValueB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*in.ValueB64)
		if err != nil {
			return engine.Message{}, fmt.Errorf("state %q: value_b64 is not standard base64: %v", name, err)
		}
		return engine.Message{Type: typ, Value: b}, nil
	case in.Text != nil:
		b, err := encodeText(typ, *in.Text)
		if err != nil {
			return engine.Message{}, fmt.Errorf("state %q (%s): %v", name, typ, err)
		}
		return engine.Message{Type: typ, Value: b}, nil
	}
	b, err := encodeJSONValue(typ, in.Value)
	if err != nil {
		return engine.Message{}, fmt.Errorf("state %q (%s): %v", name, typ, err)
	}
	return engine.Message{Type: typ, Value: b}, nil
}

func encodeText(typ, s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	switch typ {
	case engine.TypeString:
		return engine.AppendStringWrapper(nil, s), nil
	case engine.TypeLong:
		v, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a 64-bit integer", s)
		}
		return engine.AppendLongWrapper(nil, v), nil
	case engine.TypeInt:
		v, err := strconv.ParseInt(t, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a 32-bit integer", s)
		}
		return engine.AppendIntWrapper(nil, int32(v)), nil
	case engine.TypeBool:
		v, err := strconv.ParseBool(t)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return engine.AppendBoolWrapper(nil, v), nil
	case engine.TypeDouble, engine.TypeFloat:
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return appendFloating(typ, v), nil
	}
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("text is not UTF-8; use value_b64")
	}
	return []byte(s), nil
}

func encodeJSONValue(typ string, raw json.RawMessage) ([]byte, error) {
	switch typ {
	case engine.TypeString:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("want a JSON string, have %s", clipJSON(raw))
		}
		return engine.AppendStringWrapper(nil, s), nil
	case engine.TypeLong, engine.TypeInt:
		var v int64
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("want a JSON integer, have %s", clipJSON(raw))
		}
		if typ == engine.TypeInt {
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("%d is out of the 32-bit range", v)
			}
			return engine.AppendIntWrapper(nil, int32(v)), nil
		}
		return engine.AppendLongWrapper(nil, v), nil
	case engine.TypeBool:
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("want true or false, have %s", clipJSON(raw))
		}
		return engine.AppendBoolWrapper(nil, v), nil
	case engine.TypeDouble, engine.TypeFloat:
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("want a JSON number, have %s", clipJSON(raw))
		}
		return appendFloating(typ, v), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("value is not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// appendFloating encodes DoubleWrapper (fixed64) or FloatWrapper (fixed32).
func appendFloating(typ string, v float64) []byte {
	if typ == engine.TypeDouble {
		return engine.AppendDoubleWrapper(nil, v)
	}
	if v == 0 {
		return nil
	}
	return binary.LittleEndian.AppendUint32([]byte{0x0d}, math.Float32bits(float32(v)))
}

func clipJSON(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
