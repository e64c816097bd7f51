//go:build !unix

package httpapi

// FileLimit returns 0 (unknown) where RLIMIT_NOFILE does not exist.
func FileLimit() int { return 0 }
