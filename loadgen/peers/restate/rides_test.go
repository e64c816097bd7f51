package main

import (
	"testing"
	"time"
)

func TestNeighbourOrderAndEdges(t *testing.T) {
	c := Config{Grid: 100}
	want := []string{"5-5", "4-4", "5-4", "6-4", "4-5", "6-5", "4-6", "5-6", "6-6"}
	for hop, w := range want {
		got, ok := c.neighbour("5-5", hop)
		if !ok || got != w {
			t.Errorf("neighbour(5-5, %d) = %q, %v; want %q", hop, got, ok, w)
		}
	}
	// Corner 0-0: only hops 5 (1-0), 7 (0-1) and 8 (1-1) are on the grid.
	for hop := 1; hop <= 8; hop++ {
		_, ok := c.neighbour("0-0", hop)
		if ok != (hop == 5 || hop == 7 || hop == 8) {
			t.Errorf("neighbour(0-0, %d) ok = %v", hop, ok)
		}
	}
	if _, ok := c.neighbour("99-99", 8); ok {
		t.Error("neighbour(99-99, 8) is off the grid but ok")
	}
	if _, ok := c.neighbour("bad", 1); ok {
		t.Error("neighbour of a bad cell id is ok")
	}
	if _, ok := c.neighbour("5-5", 9); ok {
		t.Error("hop 9 is ok")
	}
}

func TestFinishDelayDeterministicAndBounded(t *testing.T) {
	c := Config{FinishDelay: 2 * time.Second, FinishJitter: 0.25}
	lo, hi := 1500*time.Millisecond, 2500*time.Millisecond
	seen := map[time.Duration]bool{}
	for _, r := range []string{"p-1.1", "p-1.2", "p-2.1", "p-99999.7"} {
		d := c.finishDelay(r)
		if d != c.finishDelay(r) {
			t.Fatalf("finishDelay(%q) not deterministic", r)
		}
		if d < lo || d > hi {
			t.Errorf("finishDelay(%q) = %v outside [%v, %v]", r, d, lo, hi)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Error("jitter gives every ride the same delay")
	}
	if d := (Config{FinishDelay: time.Second}).finishDelay("x"); d != time.Second {
		t.Errorf("no jitter: %v", d)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{FinishDelay: time.Second, FinishJitter: 0.25, MaxRetries: 3, Grid: 100, EventsBucket: 64}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.FinishDelay = 0 },
		func(c *Config) { c.FinishJitter = 1 },
		func(c *Config) { c.MaxRetries = -1 },
		func(c *Config) { c.Grid = 0 },
		func(c *Config) { c.EventsBucket = 0 },
	} {
		c := good
		bad(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
