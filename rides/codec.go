package rides

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrBadBody is returned (wrapped) for message bodies or state values that
// do not decode.
var ErrBadBody = errors.New("rides: bad message body")

// jsonFields is a tiny flat JSON object decoder: it calls fn for every member
// whose value is a string (unescaped), true/false ("true"/"false") or a
// number (its text); isString tells strings apart. Nested objects and arrays are errors; null is skipped.
func jsonFields(b []byte, fn func(key string, val []byte, isString bool)) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return fmt.Errorf("%w: want a JSON object", ErrBadBody)
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return fmt.Errorf("%w: want a member name at byte %d", ErrBadBody, i)
		}
		key, j, err := jsonString(b, i)
		if err != nil {
			return err
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return fmt.Errorf("%w: want ':' at byte %d", ErrBadBody, i)
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return fmt.Errorf("%w: truncated JSON", ErrBadBody)
		}
		switch c := b[i]; {
		case c == '"':
			val, j, err := jsonString(b, i)
			if err != nil {
				return err
			}
			fn(string(key), val, true)
			i = j
		case c == 't' && hasPrefix(b[i:], "true"):
			fn(string(key), b[i:i+4], false)
			i += 4
		case c == 'f' && hasPrefix(b[i:], "false"):
			fn(string(key), b[i:i+5], false)
			i += 5
		case c == 'n' && hasPrefix(b[i:], "null"):
			i += 4
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-' || (b[j] >= '0' && b[j] <= '9')) {
				j++
			}
			fn(string(key), b[i:j], false)
			i = j
		default:
			return fmt.Errorf("%w: unsupported JSON value at byte %d", ErrBadBody, i)
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return fmt.Errorf("%w: truncated JSON", ErrBadBody)
		}
		if b[i] == '}' {
			return trailing(b, i+1)
		}
		if b[i] != ',' {
			return fmt.Errorf("%w: want ',' or '}' at byte %d", ErrBadBody, i)
		}
		i = skipWS(b, i+1)
	}
}

func trailing(b []byte, i int) error {
	if skipWS(b, i) != len(b) {
		return fmt.Errorf("%w: trailing bytes after JSON object", ErrBadBody)
	}
	return nil
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString decodes the string starting at b[i] == '"'; it returns the
// value (a sub-slice of b when there are no escapes) and the index after the
// closing quote.
func jsonString(b []byte, i int) ([]byte, int, error) {
	start := i + 1
	j := start
	for j < len(b) {
		switch c := b[j]; {
		case c == '"':
			return b[start:j], j + 1, nil
		case c == '\\':
			return jsonStringSlow(b, start)
		case c < 0x20:
			return nil, 0, fmt.Errorf("%w: control character in JSON string", ErrBadBody)
		}
		j++
	}
	return nil, 0, fmt.Errorf("%w: unterminated JSON string", ErrBadBody)
}

func jsonStringSlow(b []byte, start int) ([]byte, int, error) {
	out := make([]byte, 0, 16)
	for j := start; j < len(b); j++ {
		c := b[j]
		switch {
		case c == '"':
			return out, j + 1, nil
		case c < 0x20:
			return nil, 0, fmt.Errorf("%w: control character in JSON string", ErrBadBody)
		case c != '\\':
			out = append(out, c)
			continue
		}
		j++
		if j >= len(b) {
			break
		}
		switch b[j] {
		case '"', '\\', '/':
			out = append(out, b[j])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if j+4 >= len(b) {
				return nil, 0, fmt.Errorf("%w: short \\u escape", ErrBadBody)
			}
			v, err := strconv.ParseUint(string(b[j+1:j+5]), 16, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("%w: bad \\u escape", ErrBadBody)
			}
			r := rune(v)
			j += 4
			if utf16.IsSurrogate(r) && j+6 < len(b) && b[j+1] == '\\' && b[j+2] == 'u' {
				if v2, err := strconv.ParseUint(string(b[j+3:j+7]), 16, 32); err == nil {
					if d := utf16.DecodeRune(r, rune(v2)); d != utf8.RuneError {
						r = d
						j += 6
					}
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, 0, fmt.Errorf("%w: bad JSON string escape", ErrBadBody)
		}
	}
	return nil, 0, fmt.Errorf("%w: unterminated JSON string", ErrBadBody)
}
