package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Zipf samples ranks 0..n-1 with P(k) proportional to 1/(k+1)^theta, for
// 0 < theta < 1 (the load generator uses 0.99, YCSB's "zipfian"), by the
// closed-form method of Gray et al., "Quickly Generating Billion-Record
// Synthetic Databases" (SIGMOD 1994). Construction is O(n); sampling is
// O(1). A Zipf is read-only after construction and safe for concurrent use
// with one *rand.Rand per goroutine.
type Zipf struct {
	n            uint64
	theta, alpha float64
	zetan, eta   float64
	half         float64 // 1 + 0.5^theta
}

// NewZipf makes a sampler over n >= 1 items.
func NewZipf(n int, theta float64) (*Zipf, error) {
	if n < 1 {
		return nil, fmt.Errorf("loadgen: Zipf over %d items", n)
	}
	if !(theta > 0 && theta < 1) {
		return nil, fmt.Errorf("loadgen: Zipf theta %v outside (0, 1)", theta)
	}
	z := &Zipf{n: uint64(n), theta: theta, alpha: 1 / (1 - theta)}
	z.zetan = zeta(n, theta)
	zeta2 := zeta(2, theta)
	if n > 1 {
		z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/z.zetan)
	}
	z.half = 1 + math.Pow(0.5, theta)
	return z, nil
}

func zeta(n int, theta float64) float64 {
	s := 0.0
	for i := 1; i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// Prob returns the probability of rank k.
func (z *Zipf) Prob(k int) float64 { return 1 / math.Pow(float64(k+1), z.theta) / z.zetan }

// Next draws a rank in [0, n).
func (z *Zipf) Next(r *rand.Rand) int {
	if z.n == 1 {
		return 0
	}
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.half {
		return 1
	}
	k := uint64(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if k >= z.n {
		k = z.n - 1
	}
	return int(k)
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
