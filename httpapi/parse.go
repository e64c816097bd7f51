package httpapi

import (
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/shardfn/shardfn/engine"
)

// Limits of request parsing.
const (
	// MaxSegmentBytes bounds one decoded path segment (namespace, type, id)
	// and a message type name.
	MaxSegmentBytes = 1024
	// contentTypePrefix introduces a message type name in Content-Type.
	contentTypePrefix = "application/vnd."
)

// Error is a request error with the HTTP status it is answered with. Its
// message says what is wrong and what to fix.
type Error struct {
	Status int
	Msg    string
	// Retry adds Retry-After: 1 to the answer (503s of a full server).
	Retry bool
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// IngressRequest is the parsed form of one ingress message request. Its byte
// slices alias the inputs given to ParseIngress or an internal scratch
// buffer; they are valid until the next ParseIngress with the same
// IngressRequest or until the inputs change. Reusing one IngressRequest
// makes parsing allocation-free in steady state. Not safe for concurrent
// use.
type IngressRequest struct {
	// Namespace, Type and ID are the decoded path segments.
	Namespace, Type, ID []byte
	// MessageType is the message's type name from Content-Type.
	MessageType []byte
	// Body is the request body, unchanged.
	Body []byte
	// WrapString says the body is text to be wrapped as StateFun's
	// StringWrapper (the io.statefun.types/string type).
	WrapString bool
	// Wait is the ?wait= duration; HasWait says it was given
	// (request-reply).
	Wait    time.Duration
	HasWait bool

	scratch []byte
	bodyBuf []byte // the server's buffer for small bodies (readBody)
}

// ParseIngress parses the path, Content-Type, raw query string and body of a
// message request (POST or PUT /{namespace}/{type}/{id}) into r. path is the
// request path as sent (still percent-encoded). A body longer than maxBody
// (when maxBody > 0) is an *Error with status 413; every other problem is an
// *Error with status 400. It never panics, whatever the input.
func ParseIngress(r *IngressRequest, path, contentType, query, body []byte, maxBody int) error {
	*r = IngressRequest{scratch: r.scratch[:0], bodyBuf: r.bodyBuf}
	if maxBody > 0 && len(body) > maxBody {
		return &Error{Status: http.StatusRequestEntityTooLarge,
			Msg: fmt.Sprintf("body of %d bytes is over the limit of %d bytes; send a smaller message (the server's --max-body)", len(body), maxBody)}
	}
	r.Body = body
	if err := r.parsePath(path); err != nil {
		return err
	}
	if err := r.parseContentType(contentType); err != nil {
		return err
	}
	return r.parseQuery(query)
}

// parsePath splits "/ns/type/id" into three decoded segments.
func (r *IngressRequest) parsePath(path []byte) error {
	if len(path) == 0 || path[0] != '/' {
		return badRequest("path must be /{namespace}/{type}/{id}")
	}
	p := path[1:]
	var seg [3][]byte
	for i := 0; i < 3; i++ {
		j := indexByte(p, '/')
		if i < 2 {
			if j < 0 {
				return badRequest("path must be /{namespace}/{type}/{id}: it has fewer than three segments")
			}
			seg[i], p = p[:j], p[j+1:]
		} else {
			if j >= 0 {
				return badRequest("path must be /{namespace}/{type}/{id}: it has more than three segments (encode a '/' in the id as %%2F)")
			}
			seg[i] = p
		}
	}
	// Decode each segment into scratch when it holds escapes; remember
	// offsets, since scratch may grow.
	var start, end [3]int
	var decoded [3]bool
	for i, s := range seg {
		if indexByte(s, '%') < 0 {
			continue
		}
		start[i] = len(r.scratch)
		var err error
		r.scratch, err = appendUnescaped(r.scratch, s)
		if err != nil {
			return err
		}
		end[i], decoded[i] = len(r.scratch), true
	}
	for i := range seg {
		if decoded[i] {
			seg[i] = r.scratch[start[i]:end[i]]
		}
	}
	names := [3]string{"namespace", "type", "id"}
	for i, s := range seg {
		if len(s) == 0 {
			return badRequest("path must be /{namespace}/{type}/{id}: the %s is empty", names[i])
		}
		if len(s) > MaxSegmentBytes {
			return badRequest("the %s is %d bytes long; at most %d are allowed", names[i], len(s), MaxSegmentBytes)
		}
		if !printableUTF8(s) {
			return badRequest("the %s must be UTF-8 text without control characters", names[i])
		}
		if i < 2 && indexByte(s, '/') >= 0 {
			return badRequest("the %s must not contain '/'", names[i])
		}
	}
	r.Namespace, r.Type, r.ID = seg[0], seg[1], seg[2]
	return nil
}

// parseContentType reads "application/vnd.<type name>[; params]".
func (r *IngressRequest) parseContentType(ct []byte) error {
	ct = trimSpace(ct)
	if j := indexByte(ct, ';'); j >= 0 {
		ct = trimSpace(ct[:j])
	}
	if len(ct) == 0 || equalFoldASCII(ct, "application/x-www-form-urlencoded") || equalFoldASCII(ct, "text/plain") {
		// No type, curl -d's default or plain text: the body is the text of
		// a string message.
		r.MessageType = typeStringBytes
		r.WrapString = true
		return nil
	}
	if len(ct) < len(contentTypePrefix) || !equalFoldASCII(ct[:len(contentTypePrefix)], contentTypePrefix) {
		return badRequest("Content-Type %q is not a message type; use application/vnd.<namespace>/<name>, e.g. application/vnd.rides/location (text/plain, application/x-www-form-urlencoded or none send a string)", clip(ct))
	}
	name := ct[len(contentTypePrefix):]
	if err := checkTypeName(name); err != nil {
		return err
	}
	r.MessageType = name
	r.WrapString = string(name) == engine.TypeString
	return nil
}

var typeStringBytes = []byte(engine.TypeString)

// checkTypeName validates a message type name "namespace/name".
func checkTypeName(name []byte) error {
	i := lastIndexByte(name, '/')
	if i <= 0 || i == len(name)-1 {
		return badRequest("message type %q must be <namespace>/<name>, e.g. rides/location", clip(name))
	}
	if len(name) > MaxSegmentBytes {
		return badRequest("message type is %d bytes long; at most %d are allowed", len(name), MaxSegmentBytes)
	}
	for _, c := range name {
		if c <= ' ' || c == 0x7f || c == ';' || c == '"' || c == '\\' {
			return badRequest("message type %q has a space, control character, quote or ';'", clip(name))
		}
	}
	if !utf8.Valid(name) {
		return badRequest("message type must be UTF-8")
	}
	return nil
}

// parseQuery accepts only "wait=<duration>".
func (r *IngressRequest) parseQuery(q []byte) error {
	for len(q) > 0 {
		var kv []byte
		if j := indexByte(q, '&'); j >= 0 {
			kv, q = q[:j], q[j+1:]
		} else {
			kv, q = q, nil
		}
		if len(kv) == 0 {
			continue
		}
		k, v := kv, []byte(nil)
		if j := indexByte(kv, '='); j >= 0 {
			k, v = kv[:j], kv[j+1:]
		}
		if string(k) != "wait" {
			return badRequest("unknown query parameter %q; only wait=<duration> (e.g. wait=5s) is accepted", clip(k))
		}
		if r.HasWait {
			return badRequest("wait is given twice")
		}
		if indexByte(v, '%') >= 0 {
			n := len(r.scratch)
			var err error
			r.scratch, err = appendUnescaped(r.scratch, v)
			if err != nil {
				return err
			}
			v = r.scratch[n:]
		}
		d, err := parseDuration(v)
		if err != nil {
			return err
		}
		if d <= 0 {
			return badRequest("wait must be a positive duration such as 5s or 250ms")
		}
		r.Wait, r.HasWait = d, true
	}
	return nil
}

// parseDuration parses a non-negative Go-style duration ("5s", "1.5s",
// "250ms", "1m30s"; units ns, us, µs, ms, s, m, h) without allocating.
func parseDuration(b []byte) (time.Duration, error) {
	bad := func() error {
		return badRequest("wait=%q is not a duration; use a number with a unit, e.g. 5s, 250ms or 1m30s", clip(b))
	}
	if len(b) == 0 {
		return 0, bad()
	}
	if string(b) == "0" {
		return 0, nil
	}
	const maxD = time.Duration(1<<63 - 1)
	var total time.Duration
	for len(b) > 0 {
		var whole, frac, scale uint64 = 0, 0, 1
		i, digits := 0, 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if whole > 1<<40 {
				return 0, bad()
			}
			whole = whole*10 + uint64(b[i]-'0')
			i, digits = i+1, digits+1
		}
		if i < len(b) && b[i] == '.' {
			i++
			for i < len(b) && b[i] >= '0' && b[i] <= '9' {
				if scale < 1e12 {
					frac = frac*10 + uint64(b[i]-'0')
					scale *= 10
				}
				i, digits = i+1, digits+1
			}
		}
		if digits == 0 {
			return 0, bad()
		}
		b = b[i:]
		u := 0
		for u < len(b) && b[u] != '.' && (b[u] < '0' || b[u] > '9') {
			u++
		}
		var unit time.Duration
		switch string(b[:u]) {
		case "ns":
			unit = time.Nanosecond
		case "us", "µs", "μs":
			unit = time.Microsecond
		case "ms":
			unit = time.Millisecond
		case "s":
			unit = time.Second
		case "m":
			unit = time.Minute
		case "h":
			unit = time.Hour
		default:
			return 0, bad()
		}
		b = b[u:]
		if whole > uint64(maxD/unit) {
			return 0, bad()
		}
		d := time.Duration(whole)*unit + time.Duration(float64(frac)*float64(unit)/float64(scale))
		if d < 0 || total > maxD-d {
			return 0, bad()
		}
		total += d
	}
	return total, nil
}

// appendUnescaped appends the percent-decoding of s to dst ('+' is kept:
// this is for paths).
func appendUnescaped(dst, s []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(s) {
			return dst, badRequest("bad percent-encoding %q: '%%' must be followed by two hex digits", clip(s))
		}
		h, ok1 := unhex(s[i+1])
		l, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return dst, badRequest("bad percent-encoding %q: '%%' must be followed by two hex digits", clip(s))
		}
		dst = append(dst, h<<4|l)
		i += 2
	}
	return dst, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// printableUTF8 reports whether s is valid UTF-8 without ASCII control
// characters.
func printableUTF8(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(s)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// clip shortens b for error messages.
func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
