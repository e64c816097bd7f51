package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi"
)

var (
	_ httpapi.OpsEngine    = (*Node)(nil)
	_ httpapi.OpsForwarder = (*Node)(nil)
)

// servedNodes starts the named nodes of c, each serving its admin API at
// the URL it advertises; restart starts a stopped one again (same data,
// new listener).
type servedNodes struct {
	t    *testing.T
	c    *testCluster
	urls map[string]string
	lns  map[string]net.Listener
}

func newServedNodes(t *testing.T, c *testCluster, names ...string) *servedNodes {
	s := &servedNodes{t: t, c: c, urls: map[string]string{}, lns: map[string]net.Listener{}}
	c.config = func(cfg *Config) { cfg.AdminURL = s.urls[cfg.Node] }
	for _, name := range names {
		s.start(name)
	}
	c.settled(30 * time.Second)
	return s
}

func (s *servedNodes) start(name string) *Node {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.urls[name] = "http://" + ln.Addr().String()
	n := s.c.start(name)
	serveAdmin(s.t, n, ln)
	return n
}

// ownerOfAddr is the node whose engine serves addr now.
func (c *testCluster) ownerOfAddr(addr engine.Address) string {
	p := PartitionOfAddress(addr, c.parts)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, n := range c.nodes {
		if slices.Contains(n.Owned(), p) {
			return name
		}
	}
	return ""
}

// do sends one request to base+path and returns status and body.
func do(t *testing.T, method, url, body string, forwarded bool) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, rd)
	if forwarded {
		req.Header.Set(httpapi.ForwardedHeader, "test")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// doOK retries a request while the cluster answers 503 (a rebalance).
func doOK(t *testing.T, method, url, body string) string {
	t.Helper()
	for try := 0; ; try++ {
		status, b := do(t, method, url, body, false)
		if status == http.StatusOK {
			return b
		}
		if status != http.StatusServiceUnavailable || try > 100 {
			t.Fatalf("%s %s %s: %d %s", method, url, body, status, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOpsRepairAndInspectAnyNode: on three nodes, the operator routes
// about one instance answer on a node that does not own it (forwarded to
// the owner; a forwarded request reaching a non-owner is 421, never
// forwarded again); a repair made through a non-owner is applied by the
// owner, later messages build on it, and it survives the partition moving
// to another node, which restores it from the changelog (a repair written
// to the owner's store only would be lost there). Status and functions
// answer on every node.
func TestOpsRepairAndInspectAnyNode(t *testing.T) {
	c := newTestCluster(t, 8)
	s := newServedNodes(t, c, "a", "b", "c")
	id := 0
	for ; c.ownerOfAddr(counter(id)) != "b"; id++ {
	}
	addr := counter(id)
	c.send(0, addr, engine.Message{Type: "inc", Value: []byte("d")})
	c.send(1, addr, engine.Message{Type: "inc", Value: []byte("d")})
	c.waitCounts(map[int]int{id: 2}, 30*time.Second)
	path := "/state/test/counter/" + addr.ID

	for _, name := range []string{"a", "c"} { // non-owners
		body := doOK(t, http.MethodGet, s.urls[name]+"/admin/instances/test/counter/"+addr.ID+"?max=5", "")
		var info struct {
			Address string                     `json:"address"`
			State   map[string]json.RawMessage `json:"state"`
		}
		if err := json.Unmarshal([]byte(body), &info); err != nil || info.Address != addr.String() || !strings.Contains(string(info.State["n"]), `"value":2`) {
			t.Fatalf("inspect %s on non-owner %s: %s (%v); want its state with n = 2", addr, name, body, err)
		}
		if status, body := do(t, http.MethodGet, s.urls[name]+"/admin/instances/test/counter/"+addr.ID, "", true); status != http.StatusMisdirectedRequest {
			t.Fatalf("forwarded inspect of %s reaching non-owner %s: %d %s; want 421", addr, name, status, body)
		}
		if status, body := do(t, http.MethodPut, s.urls[name]+path+"/n", `{"text":"7"}`, true); status != http.StatusMisdirectedRequest {
			t.Fatalf("forwarded repair of %s reaching non-owner %s: %d %s; want 421", addr, name, status, body)
		}
		for _, route := range []string{"/admin/status", "/admin/functions"} {
			doOK(t, http.MethodGet, s.urls[name]+route, "")
		}
	}
	err := c.nodes["a"].SetState(context.Background(), addr, []engine.StateMutation{{Name: "n", Value: engine.Message{Type: engine.TypeLong, Value: []byte{1}}}})
	if !errors.Is(err, engine.ErrNotOwner) {
		t.Fatalf("SetState of %s on non-owner a: %v; want ErrNotOwner", addr, err)
	}

	// The repair, through non-owner a: n = 40, then one more increment.
	body := doOK(t, http.MethodPut, s.urls["a"]+path+"/n", `{"text":"40"}`)
	if countOf(t, body) != 40 {
		t.Fatalf("repair of %s through a answered %s; want n = 40", addr, body)
	}
	c.send(2, addr, engine.Message{Type: "inc", Value: []byte("d")})
	c.waitCounts(map[int]int{id: 41}, 30*time.Second)

	// b leaves: its partitions move to a and c, which restore them from
	// the changelog; the repaired count survives.
	c.stop("b", true)
	c.settled(30 * time.Second)
	for _, name := range []string{"a", "c"} {
		if got := countOf(t, doOK(t, http.MethodGet, s.urls[name]+path, "")); got != 41 {
			t.Fatalf("after the move, state of %s on %s: n = %d; want 41 (the repair, then one increment)", addr, name, got)
		}
	}
	c.send(3, addr, engine.Message{Type: "inc", Value: []byte("d")})
	c.waitCounts(map[int]int{id: 42}, 30*time.Second)
	// A repair on the new owner, asked through the other node.
	other := "a"
	if c.ownerOfAddr(addr) == "a" {
		other = "c"
	}
	if got := countOf(t, doOK(t, http.MethodPost, s.urls[other]+path, `{"set":{"n":{"text":"5"}}}`)); got != 5 {
		t.Fatalf("second repair of %s through %s: n = %d; want 5", addr, other, got)
	}
	c.waitCounts(map[int]int{id: 5}, 30*time.Second)
}

// flakySpecs are counterSpecs whose "flaky" message is an "inc" that
// fails (a dead letter) while failing is set.
func flakySpecs(failing *atomic.Bool) []engine.FunctionSpec {
	specs := counterSpecs()
	inner := specs[0].Function
	specs[0].Function = engine.FunctionFunc(func(ctx engine.Context, msg engine.Message) error {
		if msg.Type == "flaky" {
			if failing.Load() {
				return errors.New("failing on purpose")
			}
			msg.Type = "inc"
		}
		return inner.Invoke(ctx, msg)
	})
	return specs
}

type deadLetterPage struct {
	Records []struct {
		Offset   uint64 `json:"offset"`
		Target   string `json:"target"`
		Type     string `json:"type"`
		Error    string `json:"error"`
		Replayed bool   `json:"replayed"`
	} `json:"records"`
	Next uint64 `json:"next"`
}

// listDeadLetters reads every dead letter through base, page by page.
func listDeadLetters(t *testing.T, base string) deadLetterPage {
	t.Helper()
	var all deadLetterPage
	for from := uint64(0); ; {
		var p deadLetterPage
		body := doOK(t, http.MethodGet, fmt.Sprintf("%s/admin/dead-letters?from=%d&max=2", base, from), "")
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("dead letters: %s: %v", body, err)
		}
		if len(p.Records) == 0 {
			all.Next = from
			return all
		}
		all.Records = append(all.Records, p.Records...)
		from = p.Next
	}
}

// TestDeadLettersReplayOnce: messages that fail on any node become dead
// letters that every node lists, whole and in the same order; a replay
// through one node re-sends them, a second replay at once through another
// node and direct re-sends with the letters' keys after a node restart are
// dropped, so each message is applied exactly once; the letters are
// marked replayed, and a replay after the restart skips them.
func TestDeadLettersReplayOnce(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	c := newTestCluster(t, 8)
	c.specs = flakySpecs(&failing)
	s := newServedNodes(t, c, "a", "b", "c")
	const letters = 6
	want := map[int]int{}
	for id := range letters {
		c.send(id, counter(id), engine.Message{Type: "flaky", Value: []byte("d")})
		want[id] = 1
	}
	var first deadLetterPage
	for deadline := time.Now().Add(30 * time.Second); ; {
		first = listDeadLetters(t, s.urls["a"])
		if len(first.Records) == letters {
			break
		}
		if len(first.Records) > letters || time.Now().After(deadline) {
			t.Fatalf("dead letters listed: %+v; want %d", first.Records, letters)
		}
		time.Sleep(100 * time.Millisecond)
	}
	targets := map[string]bool{}
	for _, d := range first.Records {
		if d.Type != "flaky" || !strings.Contains(d.Error, "failing on purpose") || d.Replayed {
			t.Fatalf("dead letter %+v: want type flaky, the function's error, not replayed", d)
		}
		targets[d.Target] = true
	}
	if len(targets) != letters {
		t.Fatalf("dead letters' targets %v; want the %d counters", targets, letters)
	}
	for _, name := range []string{"b", "c"} {
		if got := listDeadLetters(t, s.urls[name]); !slices.Equal(got.Records, first.Records) {
			t.Fatalf("dead letters on %s: %+v; on a: %+v", name, got.Records, first.Records)
		}
	}

	failing.Store(false)
	rng := fmt.Sprintf("/admin/dead-letters/replay?from=0&to=%d", first.Next)
	var res struct {
		Replayed []uint64 `json:"replayed"`
		Skipped  []struct {
			Offset uint64 `json:"offset"`
			Reason string `json:"reason"`
		} `json:"skipped"`
	}
	if err := json.Unmarshal([]byte(doOK(t, http.MethodPost, s.urls["a"]+rng, "")), &res); err != nil || len(res.Replayed) != letters {
		t.Fatalf("replay through a: %+v (%v); want %d replayed", res, err, letters)
	}
	doOK(t, http.MethodPost, s.urls["b"]+rng, "") // at once again: re-sent or skipped, applied once either way
	c.waitCounts(want, 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; {
		marked := 0
		for _, d := range listDeadLetters(t, s.urls["c"]).Records {
			if d.Replayed {
				marked++
			}
		}
		if marked == letters {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dead letters marked replayed", marked, letters)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// b restarts with its data; the letters' keys and markers survive.
	c.stop("b", false)
	nb := s.start("b")
	c.settled(30 * time.Second)
	res.Replayed, res.Skipped = nil, nil
	if err := json.Unmarshal([]byte(doOK(t, http.MethodPost, s.urls["b"]+rng, "")), &res); err != nil || len(res.Replayed) != 0 || len(res.Skipped) != letters ||
		!strings.Contains(res.Skipped[0].Reason, "replayed already") {
		t.Fatalf("replay after the restart: %+v (%v); want all %d skipped as replayed already", res, err, letters)
	}
	// A replay whose marker was not yet seen re-sends with the same keys:
	// the owners drop them (the keys are in the changelog).
	e, err := nb.engine()
	if err != nil {
		t.Fatal(err)
	}
	var again []engine.Outgoing
	for _, d := range first.Records {
		to, _ := engine.ParseAddress(d.Target)
		again = append(again, engine.Outgoing{To: to, Message: engine.Message{Type: "flaky", Value: []byte("d")}, Key: replayKey(d.Offset)})
	}
	if err := nb.sendBatch(context.Background(), e, again); err != nil {
		t.Fatal(err)
	}
	if _, err := nb.Send(context.Background(), counter(0), engine.Message{Type: "inc"}, engine.IdempotencyKey(replayKey(first.Records[0].Offset))); !errors.Is(err, engine.ErrBadKey) {
		t.Fatalf("ingress with a replay key: %v; want ErrBadKey", err)
	}
	// One more increment each, behind the re-sends in their partitions.
	for id := range letters {
		c.send(id, counter(id), engine.Message{Type: "inc", Value: []byte("d")})
		want[id]++
	}
	c.waitCounts(want, 30*time.Second)
}
