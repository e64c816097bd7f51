package format

import "fmt"

// TraceContext is the W3C trace context a message carries, so that a trace
// follows a message through invocations, remote calls, delayed messages and
// restarts. The zero value means "not traced" and costs one byte on disk.
//
// Encoding (on-disk format; never change): empty, or 25 bytes: trace id
// (16), span id (8), flags (1).
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte
}

// IsZero reports whether tc carries no trace.
func (tc TraceContext) IsZero() bool { return tc.TraceID == [16]byte{} }

const traceLen = 25

// appendTrace appends the encoding of tc (as length-prefixed bytes).
func appendTrace(dst []byte, tc TraceContext) []byte {
	if tc.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, traceLen)
	dst = append(dst, tc.TraceID[:]...)
	dst = append(dst, tc.SpanID[:]...)
	return append(dst, tc.Flags)
}

// decodeTrace decodes what appendTrace wrote.
func decodeTrace(b []byte) (TraceContext, error) {
	var tc TraceContext
	switch len(b) {
	case 0:
		return tc, nil
	case traceLen:
		copy(tc.TraceID[:], b[:16])
		copy(tc.SpanID[:], b[16:24])
		tc.Flags = b[24]
		return tc, nil
	}
	return tc, fmt.Errorf("%w: trace context of %d bytes", ErrCorrupt, len(b))
}
