package rides

import (
	"fmt"
	"time"
)

// Config tunes the RS-1 functions. The zero value is usable:
// EnsureDefaults fills it in.
type Config struct {
	// FinishDelay is the mean time from a driver accepting a ride to the
	// delayed finish message. Default 2s; must be positive.
	FinishDelay time.Duration
	// FinishJitter spreads the delay uniformly over FinishDelay*(1±J), with
	// J derived from a hash of the ride id (deterministic). Default 0.25;
	// negative disables jitter; at most 0.95.
	FinishJitter float64
	// MaxRetries is how many times a ride asks its cell again after a
	// decline. Default 3; negative means no retry.
	MaxRetries int
	// Grid is the side G of the G x G grid of cells; neighbour search stays
	// inside it. Default 100; range 1..100000.
	Grid int
}

// DefaultConfig returns the workload's defaults.
func DefaultConfig() Config {
	var c Config
	c.EnsureDefaults()
	return c
}

// EnsureDefaults fills zero fields with defaults.
func (c *Config) EnsureDefaults() {
	if c.FinishDelay == 0 {
		c.FinishDelay = 2 * time.Second
	}
	if c.FinishJitter == 0 {
		c.FinishJitter = 0.25
	} else if c.FinishJitter < 0 {
		c.FinishJitter = 0
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.Grid == 0 {
		c.Grid = 100
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.FinishDelay <= 0:
		return fmt.Errorf("rides: FinishDelay %v must be positive", c.FinishDelay)
	case c.FinishJitter < 0 || c.FinishJitter > 0.95:
		return fmt.Errorf("rides: FinishJitter %v out of range [0, 0.95]", c.FinishJitter)
	case c.MaxRetries < 0 || c.MaxRetries > 1000:
		return fmt.Errorf("rides: MaxRetries %d out of range [0, 1000]", c.MaxRetries)
	case c.Grid < 1 || c.Grid > 100000:
		return fmt.Errorf("rides: Grid %d out of range [1, 100000]", c.Grid)
	}
	return nil
}

// finishDelay is the jittered delay of ride's finish message.
func (c Config) finishDelay(ride string) time.Duration {
	if c.FinishJitter == 0 {
		return c.FinishDelay
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(ride); i++ {
		h ^= uint64(ride[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	u := float64(h>>11) / float64(1<<53) // [0, 1)
	f := 1 - c.FinishJitter + 2*c.FinishJitter*u
	return time.Duration(float64(c.FinishDelay) * f)
}

// neighbour returns the hop-th cell of the search around origin: hop 0 is
// origin itself, hops 1..8 the surrounding cells in a fixed order (row
// above left to right, then left, right, then row below), skipping cells
// off the grid. ok is false when hop names a cell off the grid or origin is
// not a grid cell id.
func (c Config) neighbour(origin string, hop int) (string, bool) {
	x, y, ok := parseCell(origin)
	if !ok {
		return "", hop == 0
	}
	if hop == 0 {
		return origin, true
	}
	if hop < 1 || hop > 8 {
		return "", false
	}
	d := neighbourOffsets[hop-1]
	nx, ny := x+d[0], y+d[1]
	if nx < 0 || ny < 0 || nx >= c.Grid || ny >= c.Grid {
		return "", false
	}
	return CellID(nx, ny), true
}

var neighbourOffsets = [8][2]int{{-1, -1}, {0, -1}, {1, -1}, {-1, 0}, {1, 0}, {-1, 1}, {0, 1}, {1, 1}}

// parseCell parses "x-y" with non-negative decimal x and y.
func parseCell(s string) (x, y int, ok bool) {
	i := 0
	x, i, ok = parseUint(s, i)
	if !ok || i >= len(s) || s[i] != '-' {
		return 0, 0, false
	}
	y, i, ok = parseUint(s, i+1)
	if !ok || i != len(s) {
		return 0, 0, false
	}
	return x, y, true
}

func parseUint(s string, i int) (int, int, bool) {
	start := i
	v := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' && i-start < 9 {
		v = v*10 + int(s[i]-'0')
		i++
	}
	return v, i, i > start
}
