package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Zipf samples ranks 0..n-1 with P(k) proportional to 1/(k+1)^theta (the
// load generator uses theta 0.99, YCSB's "zipfian" constant) exactly, by
// binary search in the precomputed cumulative distribution: construction
// is O(n) time and 8n bytes, a draw O(log n). A Zipf is read-only after
// construction and safe for concurrent use with one *rand.Rand per
// goroutine.
type Zipf struct {
	theta float64
	zetan float64
	cdf   []float64 // cdf[k] = P(rank <= k); cdf[n-1] = 1
}

// NewZipf makes a sampler over 1 <= n <= 1<<28 items, theta > 0.
func NewZipf(n int, theta float64) (*Zipf, error) {
	if n < 1 || n > 1<<28 {
		return nil, fmt.Errorf("loadgen: Zipf over %d items (want 1..%d)", n, 1<<28)
	}
	if !(theta > 0) || theta > 10 {
		return nil, fmt.Errorf("loadgen: Zipf theta %v outside (0, 10]", theta)
	}
	z := &Zipf{theta: theta, cdf: make([]float64, n)}
	sum := 0.0
	for i := 0; i < n; i++ {
		sum += 1 / math.Pow(float64(i+1), theta)
		z.cdf[i] = sum
	}
	z.zetan = sum
	for i := range z.cdf {
		z.cdf[i] /= sum
	}
	z.cdf[n-1] = 1
	return z, nil
}

// Prob returns the probability of rank k.
func (z *Zipf) Prob(k int) float64 { return 1 / math.Pow(float64(k+1), z.theta) / z.zetan }

// Next draws a rank in [0, n).
func (z *Zipf) Next(r *rand.Rand) int {
	u := r.Float64()
	return sort.SearchFloat64s(z.cdf, u) // first k with cdf[k] >= u
}

// keyChooser picks key indexes uniformly or by Zipf rank.
type keyChooser struct {
	n    int
	zipf *Zipf
}

func newKeyChooser(n int, skew bool) (keyChooser, error) {
	c := keyChooser{n: n}
	if skew {
		z, err := NewZipf(n, 0.99)
		if err != nil {
			return c, err
		}
		c.zipf = z
	}
	return c, nil
}

func (c keyChooser) next(r *rand.Rand) int {
	if c.zipf != nil {
		return c.zipf.Next(r)
	}
	return r.IntN(c.n)
}
