//go:build !unix

package loadgen

import "time"

// SelfCPU returns 0 where the process's CPU time is not read.
func SelfCPU() time.Duration { return 0 }
