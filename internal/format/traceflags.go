package format

// TraceSampled is the W3C trace-flags bit that says the trace is recorded.
const TraceSampled = 0x01

// Sampled reports whether tc carries a trace that is recorded. Only
// sampled contexts start spans; an unsampled or zero one costs nothing
// downstream.
func (tc TraceContext) Sampled() bool { return tc.Flags&TraceSampled != 0 && !tc.IsZero() }
