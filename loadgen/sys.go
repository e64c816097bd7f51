package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// SelfRSS returns this process's resident set size (VmRSS of
// /proc/self/status) in bytes.
func SelfRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("loadgen: reading RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("VmRSS:")) {
			continue
		}
		fs := bytes.Fields(line[len("VmRSS:"):])
		if len(fs) < 1 {
			break
		}
		kb, err := strconv.ParseInt(string(fs[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: bad VmRSS line %q", line)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("loadgen: no VmRSS in /proc/self/status")
}
