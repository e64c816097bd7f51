package httpapi

import "unsafe"

// bytesToString returns a string sharing b's memory. The caller must never
// modify b afterwards.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// unsafeStringBytes returns the bytes of s without copying; the caller must
// never modify them.
func unsafeStringBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
