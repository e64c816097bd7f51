package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/internal/jsonstr"
)

// appendJSONString appends s as a JSON string literal (package jsonstr).
func appendJSONString(dst []byte, s string) []byte { return jsonstr.Append(dst, s) }

// appendErrorBody appends {"error":"msg"}.
func appendErrorBody(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, msg)
	return append(dst, '}', '\n')
}

// appendValue appends a message or state value for humans: "value" with
// the decoded built-in type or the bytes themselves when they are JSON,
// "text" for other printable UTF-8, else "value_b64". key is the JSON key to
// use for the JSON form ("value" or "body").
func appendValue(dst []byte, key, typ string, b []byte) []byte {
	switch typ {
	case engine.TypeString:
		if s, err := engine.DecodeStringWrapper(b); err == nil {
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, `":`...)
			return appendJSONString(dst, s)
		}
	case engine.TypeLong, engine.TypeInt:
		if v, err := (engine.Message{Type: typ, Value: b}).AsInt64(); err == nil {
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, `":`...)
			return fmt.Appendf(dst, "%d", v)
		}
	case engine.TypeBool:
		if v, err := engine.DecodeBoolWrapper(b); err == nil {
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, `":`...)
			return fmt.Appendf(dst, "%t", v)
		}
	case engine.TypeDouble, engine.TypeFloat:
		if v, ok := decodeFloating(typ, b); ok {
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, `":`...)
			return strconv.AppendFloat(dst, v, 'g', -1, 64)
		}
	}
	if len(b) > 0 && json.Valid(b) {
		dst = append(dst, '"')
		dst = append(dst, key...)
		dst = append(dst, `":`...)
		return appendCompactJSON(dst, b)
	}
	if len(b) > 0 && printableUTF8(b) {
		dst = append(dst, `"text":`...)
		return appendJSONString(dst, string(b))
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	dst = append(dst, `_b64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendCompactJSON appends valid JSON b without insignificant whitespace.
func appendCompactJSON(dst, b []byte) []byte {
	n := len(dst)
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, b); err != nil {
		return append(dst[:n], b...)
	}
	return buf.Bytes()
}

// engineError maps an engine error to a status, a message for the client
// and whether to add Retry-After.
func engineError(err error) (status int, msg string, retry bool) {
	var he *Error
	switch {
	case errors.As(err, &he):
		return he.Status, he.Msg, he.Retry
	case errors.Is(err, engine.ErrIngressType), errors.Is(err, engine.ErrBadKey):
		return http.StatusBadRequest, err.Error(), false
	case errors.Is(err, engine.ErrUnknownType):
		return http.StatusNotFound, err.Error() + "; send to a registered function type", false
	case errors.Is(err, engine.ErrBadAddress), errors.Is(err, engine.ErrBadMessage),
		errors.Is(err, engine.ErrStateType), errors.Is(err, engine.ErrUndeclared):
		return http.StatusBadRequest, err.Error(), false
	case errors.Is(err, engine.ErrNotOwner):
		return http.StatusMisdirectedRequest, err.Error() + "; ask the node that owns it (cluster mode)", false
	case errors.Is(err, engine.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error() + "; send a smaller message", false
	case errors.Is(err, engine.ErrOverloaded):
		return http.StatusServiceUnavailable, err.Error() + "; retry after a second", true
	case errors.Is(err, engine.ErrFailed):
		return http.StatusServiceUnavailable, err.Error(), false
	case errors.Is(err, engine.ErrReplyUnavailable):
		return http.StatusAccepted, err.Error() + "; the message was processed exactly once: do not send it again (with an Idempotency-Key, sending it again returns its reply)", false
	case errors.Is(err, engine.ErrInDoubt):
		return http.StatusServiceUnavailable, err.Error() + "; the message was accepted and may be applied: send it again only with the same Idempotency-Key", false
	case errors.Is(err, engine.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "engine is shutting down; the message was not processed: retry against the restarted server", true
	case errors.Is(err, engine.ErrNoReply):
		return http.StatusGatewayTimeout, err.Error() + "; no reply before the wait passed (use a longer wait=, or send it again with the same Idempotency-Key to wait for its reply)", false
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "no reply before the wait passed; the message was accepted and is processed exactly once (use a longer wait=)", false
	}
	return http.StatusInternalServerError, "internal error: " + err.Error(), false
}

func jsonValid(b []byte) bool { return json.Valid(b) }

func appendBase64(dst, b []byte) []byte { return base64.StdEncoding.AppendEncode(dst, b) }

// builtinDecodable reports whether b decodes as the built-in type typ
// (string, long, int, bool), which appendValue then shows decoded.
func builtinDecodable(typ string, b []byte) bool {
	var err error
	switch typ {
	case engine.TypeString:
		_, err = engine.DecodeStringWrapper(b)
	case engine.TypeLong, engine.TypeInt:
		_, err = (engine.Message{Type: typ, Value: b}).AsInt64()
	case engine.TypeBool:
		_, err = engine.DecodeBoolWrapper(b)
	case engine.TypeDouble, engine.TypeFloat:
		_, ok := decodeFloating(typ, b)
		return ok
	default:
		return false
	}
	return err == nil
}

// decodeFloating decodes DoubleWrapper (field 1, fixed64) or FloatWrapper
// (field 1, fixed32) when b is exactly that field or empty (zero); NaN and
// infinities, which JSON cannot carry, are not decoded.
func decodeFloating(typ string, b []byte) (float64, bool) {
	var v float64
	switch {
	case len(b) == 0:
	case typ == engine.TypeDouble && len(b) == 9 && b[0] == 0x09:
		v = math.Float64frombits(binary.LittleEndian.Uint64(b[1:]))
	case typ == engine.TypeFloat && len(b) == 5 && b[0] == 0x0d:
		v = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[1:])))
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}
