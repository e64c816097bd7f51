package loadgen

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestZipfFollowsPowerLaw(t *testing.T) {
	const n, draws = 1000, 400000
	z, err := NewZipf(n, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		k := z.Next(r)
		if k < 0 || k >= n {
			t.Fatalf("rank %d out of [0, %d)", k, n)
		}
		counts[k]++
	}
	// The head ranks match their probabilities within 5 %.
	for k := 0; k < 20; k++ {
		want := z.Prob(k) * draws
		if got := float64(counts[k]); math.Abs(got-want) > 0.05*want {
			t.Errorf("rank %d drawn %v times, want about %.0f", k, got, want)
		}
	}
	// Rank 0 against rank 9: ratio 10^0.99 ~ 9.8.
	if ratio := float64(counts[0]) / float64(counts[9]); ratio < 8 || ratio > 12 {
		t.Errorf("rank0/rank9 = %.2f, want about 9.8", ratio)
	}
	// The tail is reached: the upper half of ranks gets a share near its
	// probability mass.
	var tailWant, tailGot float64
	for k := n / 2; k < n; k++ {
		tailWant += z.Prob(k)
		tailGot += float64(counts[k])
	}
	if tailGot/draws < 0.8*tailWant || tailGot/draws > 1.2*tailWant {
		t.Errorf("upper half share %.4f, want about %.4f", tailGot/draws, tailWant)
	}
}

func TestZipfEdges(t *testing.T) {
	for _, c := range []struct {
		n     int
		theta float64
	}{{0, 0.99}, {10, 0}, {10, -1}, {10, 11}} {
		if _, err := NewZipf(c.n, c.theta); err == nil {
			t.Errorf("NewZipf(%d, %v) accepted", c.n, c.theta)
		}
	}
	z, err := NewZipf(1, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100; i++ {
		if z.Next(r) != 0 {
			t.Fatal("single-item Zipf drew a rank other than 0")
		}
	}
	// Uniform chooser covers the whole range.
	c, _ := newKeyChooser(10, false)
	seen := map[int]bool{}
	for i := 0; i < 1000; i++ {
		seen[c.next(r)] = true
	}
	if len(seen) != 10 {
		t.Fatalf("uniform chooser reached %d of 10 keys", len(seen))
	}
}
