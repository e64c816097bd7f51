package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The HTTP side of TestClusterCrash: load, probes and counter reads.
type ccTally struct {
	acked, inDoubt, notAccepted atomic.Int64
}

type ccClient struct {
	t       *testing.T
	nodes   []*ccNode
	http    *http.Client
	tallies map[string]*ccTally

	mu         sync.Mutex
	unexpected map[string]int
}

type outcome int

const (
	acked outcome = iota
	inDoubt
	notAccepted
)

// post sends one increment to id through node and classifies the answer:
// 2xx acked; a refused connection or a 503 with Retry-After (not ready,
// overloaded, shutting down: not processed) not accepted; anything else
// (a timeout, a broken connection, a 503 "may be applied") in doubt.
func (c *ccClient) post(ctx context.Context, n *ccNode, id string) outcome {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+n.ingress+"/example/counter/"+id, strings.NewReader("x"))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	r, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return notAccepted
		}
		c.note("transport error")
		return inDoubt
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	switch {
	case r.StatusCode/100 == 2:
		return acked
	case r.StatusCode == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
		return notAccepted
	case r.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "may be applied"):
		c.note("503 in doubt")
		return inDoubt
	case r.StatusCode/100 == 4:
		c.t.Errorf("POST %s to %s: %d %s", id, n.name, r.StatusCode, body)
		return notAccepted
	}
	msg := string(body)
	if len(msg) > 120 {
		msg = msg[:120]
	}
	c.note(fmt.Sprintf("%d %s", r.StatusCode, msg))
	return inDoubt
}

func (c *ccClient) note(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unexpected == nil {
		c.unexpected = map[string]int{}
	}
	c.unexpected[kind]++
}

func (c *ccClient) unexpectedSummary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unexpected) == 0 {
		return "none"
	}
	var s []string
	for k, v := range c.unexpected {
		s = append(s, fmt.Sprintf("%dx %q", v, k))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// send posts one increment of id, retrying answers that say it was not
// accepted on another node; it reports whether it was acked.
func (c *ccClient) send(ctx context.Context, rng *rand.Rand, id string) bool {
	tl := c.tallies[id]
	i := rng.IntN(len(c.nodes))
	for ctx.Err() == nil {
		switch c.post(ctx, c.nodes[i], id) {
		case acked:
			tl.acked.Add(1)
			return true
		case inDoubt:
			tl.inDoubt.Add(1)
			return false
		}
		tl.notAccepted.Add(1)
		i = (i + 1 + rng.IntN(len(c.nodes)-1)) % len(c.nodes)
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitReady waits until every node answers /ready 200.
func (c *ccClient) waitReady(limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		var notReady []string
		for _, n := range c.nodes {
			r, err := c.http.Get("http://" + n.admin + "/ready")
			if err == nil {
				r.Body.Close()
			}
			if err != nil || r.StatusCode != 200 {
				notReady = append(notReady, n.name)
			}
		}
		if len(notReady) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("%v not ready after %v", notReady, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// count reads id's count on every node's admin listener (the owner answers
// from its engine, the others forward the read to it; 421 or 503 while a
// rebalance is in progress): every 200 must agree.
func (c *ccClient) count(id string) (int64, string, error) {
	var got []string
	var val int64
	var owner string
	for _, n := range c.nodes {
		r, err := c.http.Get("http://" + n.admin + "/state/example/counter/" + id)
		if err != nil {
			got = append(got, n.name+": "+err.Error())
			continue
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		got = append(got, n.name+": "+strconv.Itoa(r.StatusCode))
		if r.StatusCode != 200 {
			continue
		}
		var st struct {
			State map[string]struct {
				Value   *int64
				Present *bool
			}
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return 0, "", fmt.Errorf("state of %s on %s: %v: %s", id, n.name, err, b)
		}
		var v int64
		if p := st.State["count"].Value; p != nil {
			v = *p
		}
		// Every node answers: the owner from its engine, the others by
		// forwarding to it. They must agree.
		if owner != "" && v != val {
			return 0, "", fmt.Errorf("%s: nodes disagree on its count: %s has %d, %s has %d (%s)", id, owner, val, n.name, v, strings.Join(got, ", "))
		}
		if owner == "" {
			owner, val = n.name, v
		}
	}
	if owner == "" {
		return 0, "", fmt.Errorf("%s: no owner answers (%s)", id, strings.Join(got, ", "))
	}
	return val, owner, nil
}

// probeAll: every partition's probe takes a POST through a random node and
// shows it on its owner, all partitions at once.
func (c *ccClient) probeAll(probes []string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for p, id := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), uint64(time.Now().UnixNano())))
			for !c.send(ctx, rng, id) {
				if ctx.Err() != nil {
					errs[p] = fmt.Errorf("partition %d: no POST of %s acked within %v", p, id, limit)
					return
				}
			}
			want := c.tallies[id].acked.Load()
			var last error
			for ctx.Err() == nil {
				v, _, err := c.count(id)
				if err == nil && v >= want {
					return
				}
				last = err
				if err == nil {
					last = fmt.Errorf("count %d < acked %d", v, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			errs[p] = fmt.Errorf("partition %d: %s not read back within %v: %v", p, id, limit, last)
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// settledCounts reads every counter until two reads 3 s apart agree.
func (c *ccClient) settledCounts(ids []string, limit time.Duration) (map[string]int64, error) {
	deadline := time.Now().Add(limit)
	var prev map[string]int64
	for {
		cur := map[string]int64{}
		var err error
		for _, id := range ids {
			v, _, e := c.count(id)
			if e != nil {
				err = e
				break
			}
			cur[id] = v
		}
		if err == nil && prev != nil && mapsEqual(prev, cur) {
			return cur, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("counts still change")
			}
			return nil, fmt.Errorf("not settled within %v: %w", limit, err)
		}
		if err == nil {
			prev = cur
		}
		time.Sleep(3 * time.Second)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// changelogTails describes, for every changelog partition whose committed
// records (control records kept) do not reach its last stable offset, the
// last offset a read_committed reader sees and the end: a restore that
