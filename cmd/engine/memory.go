package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/shardfn/shardfn/httpapi"
	"github.com/shardfn/shardfn/internal/memmodel"
)

// memParams are the memory model's parameters for these flags (maxConns
// and bodyInFlight as the server derived them).
func (c *config) memParams(maxConns int, bodyInFlight int64) memmodel.Params {
	p := memmodel.Params{
		MemoryBudget:    int64(c.memoryBudget),
		MaxQueuedBytes:  int64(c.maxQueuedBytes),
		MaxBodyInFlight: bodyInFlight,
		MaxEgressBytes:  int64(c.maxEgressBytes),
		MaxEgressReads:  c.maxEgressReads,
		MaxConns:        maxConns,
		MaxRecordBytes:  max(32<<20, 2*int64(c.maxBody)),
	}
	p.Defaults()
	return p
}

// goMemoryLimit is the soft memory limit --memory-limit asks for: 0 for
// none (off, or auto while GOMEMLIMIT is set: the runtime has applied it).
func (c *config) goMemoryLimit() (int64, error) {
	switch strings.ToLower(strings.TrimSpace(c.memoryLimit)) {
	case "off", "0":
		return 0, nil
	case "auto", "":
		if os.Getenv("GOMEMLIMIT") != "" {
			return 0, nil
		}
		total, _ := httpapi.DefaultConnLimits(httpapi.FileLimit())
		conns := c.maxConns
		if conns == 0 {
			conns = total
		}
		inFlight := int64(c.maxBodyInFlight)
		if inFlight == 0 {
			inFlight = 16 * int64(c.maxBody)
		}
		return memmodel.GoLimit(c.memParams(conns, inFlight)), nil
	}
	v, err := parseByteSize(c.memoryLimit)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit: %w (or auto, or off)", err)
	}
	if v > 0 && v < 64<<20 {
		return 0, fmt.Errorf("--memory-limit %d is below 64MiB: the runtime would collect without end", v)
	}
	return v, nil
}
