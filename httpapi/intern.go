package httpapi

import (
	"strings"
	"sync"

	"github.com/shardfn/shardfn/engine"
)

// interner keeps one string per distinct namespace, function type and
// message type name seen, so that building an engine message from a request
// does not allocate them again. Every string it returns is its own copy:
// none shares memory with a request, whose buffers the server reuses. It
// holds at most maxInterned names; past that, names are copied per request.
type interner struct {
	mu sync.RWMutex
	m  map[string]string
}

const maxInterned = 4096

// bytes returns the interned copy of b.
func (in *interner) bytes(b []byte) string {
	in.mu.RLock()
	s, ok := in.m[string(b)] // the compiler does not allocate for the lookup
	in.mu.RUnlock()
	if ok {
		return s
	}
	return in.add(string(b))
}

// string returns the interned copy of s.
func (in *interner) string(s string) string {
	in.mu.RLock()
	t, ok := in.m[s]
	in.mu.RUnlock()
	if ok {
		return t
	}
	// s may be a substring of a larger string (an address): keep only its
	// own bytes.
	return in.add(strings.Clone(s))
}

// add records s, a string of its own, unless the table is full.
func (in *interner) add(s string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if t, ok := in.m[s]; ok {
		return t
	}
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

// message builds the engine address and message of a parsed request. The
// engine keeps both for as long as the message lives (in addresses, callers
// and timers, possibly for hours), while the request's buffers are reused by
// the next request: so the id and the body are copied into memory of their
// own, and the names come from the interner. These two copies are the only
// allocations in steady state (one when the body is empty).
func (s *Server) message(r *IngressRequest) (engine.Address, engine.Message) {
	var body []byte
	switch {
	case len(r.Body) == 0: // the empty value, wrapped or not
	case r.WrapString:
		body = engine.AppendStringWrapper(make([]byte, 0, len(r.Body)+stringWrapperOverhead), string(r.Body))
	default:
		body = append(make([]byte, 0, len(r.Body)), r.Body...)
	}
	to := engine.Address{Namespace: s.names.bytes(r.Namespace), Type: s.names.bytes(r.Type), ID: string(r.ID)}
	return to, engine.Message{Type: s.names.bytes(r.MessageType), Value: body}
}

// stringWrapperOverhead bounds what StringWrapper adds to its text: the
// field's tag and its length as a uvarint.
const stringWrapperOverhead = 1 + 10
