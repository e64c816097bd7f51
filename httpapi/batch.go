package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/shardfn/shardfn/engine"
)

// batchLine is one line of a newline-delimited JSON batch.
type batchLine struct {
	To, Type string
	Body     []byte // the raw JSON value; nil when absent
	BodyB64  *string
	Key      string // idempotency key; "" when absent
}

const batchLineHelp = `want {"to":"ns/type/id","type":"ns/name","body":<JSON>} or "body_b64" in place of body, and optionally "key":"<idempotency key>" (member names are case-sensitive)`

// decodeBatchLine decodes one JSON batch line. Unlike encoding/json's
// struct decoding, member names must match exactly ("TO" is not "to") and
// each may appear once.
func decodeBatchLine(line []byte) (batchLine, error) {
	var l batchLine
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return l, fmt.Errorf("not a JSON object; %s", batchLineHelp)
	}
	var seen [5]bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return l, fmt.Errorf("%v; %s", err, batchLineHelp)
		}
		key, _ := tok.(string)
		i := -1
		switch key {
		case "to":
			i = 0
		case "type":
			i = 1
		case "body":
			i = 2
		case "body_b64":
			i = 3
		case "key":
			i = 4
		default:
			return l, fmt.Errorf("unknown member %q; %s", clip([]byte(key)), batchLineHelp)
		}
		if seen[i] {
			return l, fmt.Errorf("member %q is given twice", key)
		}
		seen[i] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return l, fmt.Errorf("member %q: %v; %s", key, err, batchLineHelp)
		}
		switch i {
		case 0, 1, 3, 4:
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return l, fmt.Errorf("member %q must be a JSON string", key)
			}
			switch i {
			case 0:
				l.To = v
			case 1:
				l.Type = v
			case 3:
				l.BodyB64 = &v
			default:
				l.Key = v
			}
		case 2:
			l.Body = raw // Decode copied it
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return l, fmt.Errorf("%v; %s", err, batchLineHelp)
	}
	if _, err := dec.Token(); err != io.EOF {
		return l, fmt.Errorf("more than one JSON value on the line")
	}
	return l, nil
}

// ParseBatch parses a /batch body (see the package documentation for both
// forms) into messages. The messages do not alias body. At most
// maxMessages are accepted. Errors are *Error with status 400 (413 for too
// many messages) and name the message at fault as the engine does: "message
// N", N counting messages from 0 in the order sent (blank lines are not
// messages), followed for JSON by "(line L)", L counting lines from 1.
func ParseBatch(contentType, body []byte, maxMessages int) ([]engine.Outgoing, error) {
	ct := trimSpace(contentType)
	if j := indexByte(ct, ';'); j >= 0 {
		ct = trimSpace(ct[:j])
	}
	if equalFoldASCII(ct, contentTypeBatch) {
		return parseBinaryBatch(body, maxMessages)
	}
	return parseJSONBatch(body, maxMessages)
}

func tooMany(max int) error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg: fmt.Sprintf("batch has more than %d messages; split it", max)}
}

func parseJSONBatch(body []byte, maxMessages int) ([]engine.Outgoing, error) {
	var out []engine.Outgoing
	for lineNo := 1; len(body) > 0; lineNo++ {
		var line []byte
		if j := indexByte(body, '\n'); j >= 0 {
			line, body = body[:j], body[j+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(out) == maxMessages {
			return nil, tooMany(maxMessages)
		}
		msgNo := len(out)
		bad := func(format string, args ...any) error {
			return badRequest("message %d (line %d): %s", msgNo, lineNo, fmt.Sprintf(format, args...))
		}
		l, err := decodeBatchLine(line)
		if err != nil {
			return nil, bad("%v", err)
		}
		to, err := parseAddress(l.To)
		if err != nil {
			return nil, bad("%v", err)
		}
		if err := checkTypeName([]byte(l.Type)); err != nil {
			return nil, bad("%v", err)
		}
		var value []byte
		switch {
		case l.BodyB64 != nil && l.Body != nil:
			return nil, bad("give body or body_b64, not both")
		case l.BodyB64 != nil:
			value, err = base64.StdEncoding.DecodeString(*l.BodyB64)
			if err != nil {
				return nil, bad("body_b64 is not standard base64: %v", err)
			}
		case l.Type == engine.TypeString && l.Body != nil:
			var s string
			if err := json.Unmarshal(l.Body, &s); err != nil {
				return nil, bad("the body of a %s message must be a JSON string", engine.TypeString)
			}
			value = engine.AppendStringWrapper(nil, s)
		default:
			value = l.Body
		}
		out = append(out, engine.Outgoing{To: to, Message: engine.Message{Type: l.Type, Value: value}, Key: l.Key})
	}
	return out, nil
}

func parseBinaryBatch(body []byte, maxMessages int) ([]engine.Outgoing, error) {
	body = bytes.Clone(body) // the messages keep slices of it
	var out []engine.Outgoing
	field := func(rec int, what string) ([]byte, error) {
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			return nil, badRequest("message %d: bad or truncated %s length (binary batch framing: uvarint(len) bytes, for address, type and body)", rec, what)
		}
		f := body[k : k+int(n) : k+int(n)]
		body = body[k+int(n):]
		return f, nil
	}
	for rec := 0; len(body) > 0; rec++ {
		if len(out) == maxMessages {
			return nil, tooMany(maxMessages)
		}
		addr, err := field(rec, "address")
		if err != nil {
			return nil, err
		}
		typ, err := field(rec, "type")
		if err != nil {
			return nil, err
		}
		val, err := field(rec, "body")
		if err != nil {
			return nil, err
		}
		to, err := parseAddress(string(addr))
		if err != nil {
			return nil, badRequest("message %d: %v", rec, err)
		}
		if err := checkTypeName(typ); err != nil {
			return nil, badRequest("message %d: %v", rec, err)
		}
		out = append(out, engine.Outgoing{To: to, Message: engine.Message{Type: string(typ), Value: val}})
	}
	return out, nil
}

// parseAddress parses "ns/type/id"; the id is everything after the second
// '/' and may contain '/'.
func parseAddress(s string) (engine.Address, error) {
	i := bytes.IndexByte([]byte(s), '/')
	if i < 0 {
		return engine.Address{}, fmt.Errorf("address %q must be ns/type/id", clip([]byte(s)))
	}
	j := bytes.IndexByte([]byte(s[i+1:]), '/')
	if j < 0 {
		return engine.Address{}, fmt.Errorf("address %q must be ns/type/id", clip([]byte(s)))
	}
	a := engine.Address{Namespace: s[:i], Type: s[i+1 : i+1+j], ID: s[i+2+j:]}
	for _, p := range []string{a.Namespace, a.Type, a.ID} {
		if p == "" || len(p) > MaxSegmentBytes || !printableUTF8([]byte(p)) {
			return engine.Address{}, fmt.Errorf("address %q must be ns/type/id, each part non-empty UTF-8 text without control characters, at most %d bytes", clip([]byte(s)), MaxSegmentBytes)
		}
	}
	return a, nil
}
