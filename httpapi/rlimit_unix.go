//go:build unix

package httpapi

import "syscall"

// FileLimit returns the process's soft RLIMIT_NOFILE, or 0 when unknown.
func FileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur > 1<<30 {
		return 1 << 30
	}
	return int(r.Cur)
}
