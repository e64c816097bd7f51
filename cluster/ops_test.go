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
	c.send(2, addr, engine.Message{Type: "fwd-later", Value: []byte("600000 c-none")}) // a delayed message, pending for the whole test
	c.waitCounts(map[int]int{id: 2}, 30*time.Second)
	path := "/state/test/counter/" + addr.ID

	for _, name := range []string{"a", "c"} { // non-owners
		inspectOn(t, s.urls[name], addr, 2)
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
	// a's engine itself refuses it: its effects would go to a changelog
	// partition that b owns.
	err = c.nodes["a"].eng.Load().SetState(context.Background(), addr, []engine.StateMutation{{Name: "n", Value: engine.Message{Type: engine.TypeLong, Value: []byte{1}}}})
	if !errors.Is(err, engine.ErrNotOwner) {
		t.Fatalf("engine SetState of %s on non-owner a: %v; want ErrNotOwner", addr, err)
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
		inspectOn(t, s.urls[name], addr, 41)
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

// inspectOn inspects addr through base and checks that the answer is its
// owner's: count n, and the one pending delayed message it sent itself.
func inspectOn(t *testing.T, base string, addr engine.Address, n int) {
	t.Helper()
	body := doOK(t, http.MethodGet, base+"/admin/instances/test/counter/"+addr.ID+"?max=5", "")
	var info struct {
		Address string                     `json:"address"`
		State   map[string]json.RawMessage `json:"state"`
		Delayed []struct {
			From string `json:"from"`
			To   string `json:"to"`
			Type string `json:"type"`
		} `json:"delayed"`
	}
	err := json.Unmarshal([]byte(body), &info)
	if err != nil || info.Address != addr.String() || !strings.Contains(string(info.State["n"]), fmt.Sprintf(`"value":%d`, n)) ||
		len(info.Delayed) != 1 || info.Delayed[0].To != addr.String() || info.Delayed[0].Type != "fwd" {
		t.Fatalf("inspect %s through %s: %s (%v); want its state with n = %d and its one delayed fwd", addr, base, body, err, n)
	}
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

// replayAnswer is the answer of POST /admin/dead-letters/replay.
type replayAnswer struct {
	Replayed []uint64 `json:"replayed"`
	Skipped  []struct {
		Offset uint64 `json:"offset"`
		Reason string `json:"reason"`
	} `json:"skipped"`
}

func replay(t *testing.T, base, rng string) replayAnswer {
	t.Helper()
	var res replayAnswer
	body := doOK(t, http.MethodPost, base+rng, "")
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("replay %s through %s: %s: %v", rng, base, body, err)
	}
	return res
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
	first := deadLettersOnEveryNode(t, s, letters)

	failing.Store(false)
	rng := fmt.Sprintf("/admin/dead-letters/replay?from=0&to=%d", first.Next)
	if res := replay(t, s.urls["a"], rng); len(res.Replayed) != letters {
		t.Fatalf("replay through a: %+v; want %d replayed", res, letters)
	}
	replay(t, s.urls["b"], rng) // at once again: re-sent or skipped, applied once either way
	c.waitCounts(want, 30*time.Second)
	waitMarked(t, s.urls["c"], letters)

	// b restarts with its data; the letters' keys and markers survive.
	c.stop("b", false)
	nb := s.start("b")
	c.settled(30 * time.Second)
	if res := replay(t, s.urls["b"], rng); len(res.Replayed) != 0 || len(res.Skipped) != letters || !strings.Contains(res.Skipped[0].Reason, "replayed already") {
		t.Fatalf("replay after the restart: %+v; want all %d skipped as replayed already", res, letters)
	}
	resendWithReplayKeys(t, nb, first)
	// One more increment each, behind the re-sends in their partitions.
	for id := range letters {
		c.send(id, counter(id), engine.Message{Type: "inc", Value: []byte("d")})
		want[id]++
	}
	c.waitCounts(want, 30*time.Second)
}

// deadLettersOnEveryNode waits until node a lists n dead letters, checks
// them, and checks that b and c list the same.
func deadLettersOnEveryNode(t *testing.T, s *servedNodes, n int) deadLetterPage {
	t.Helper()
	var first deadLetterPage
	for deadline := time.Now().Add(30 * time.Second); ; {
		first = listDeadLetters(t, s.urls["a"])
		if len(first.Records) == n {
			break
		}
		if len(first.Records) > n || time.Now().After(deadline) {
			t.Fatalf("dead letters listed: %+v; want %d", first.Records, n)
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
	if len(targets) != n {
		t.Fatalf("dead letters' targets %v; want %d counters", targets, n)
	}
	for _, name := range []string{"b", "c"} {
		if got := listDeadLetters(t, s.urls[name]); !slices.Equal(got.Records, first.Records) {
			t.Fatalf("dead letters on %s: %+v; on a: %+v", name, got.Records, first.Records)
		}
	}
	return first
}

// waitMarked waits until base lists n dead letters marked replayed.
func waitMarked(t *testing.T, base string, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		marked := 0
		for _, d := range listDeadLetters(t, base).Records {
			if d.Replayed {
				marked++
			}
		}
		if marked == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dead letters marked replayed", marked, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// resendWithReplayKeys re-sends the letters' messages with their replay
// keys, as a replay that did not see the markers yet would (the owners
// must drop them: the keys are in the changelog), and checks that ingress
// may not use such a key.
func resendWithReplayKeys(t *testing.T, n *Node, letters deadLetterPage) {
	t.Helper()
	e, err := n.engine()
	if err != nil {
		t.Fatal(err)
	}
	var again []engine.Outgoing
	for _, d := range letters.Records {
		to, _ := engine.ParseAddress(d.Target)
		again = append(again, engine.Outgoing{To: to, Message: engine.Message{Type: "flaky", Value: []byte("d")}, Key: replayKey(d.Offset)})
	}
	if err := n.sendBatch(context.Background(), e, again); err != nil {
		t.Fatal(err)
	}
	key := engine.IdempotencyKey(replayKey(letters.Records[0].Offset))
	if _, err := n.Send(context.Background(), counter(0), engine.Message{Type: "inc"}, key); !errors.Is(err, engine.ErrBadKey) {
		t.Fatalf("ingress with a replay key: %v; want ErrBadKey", err)
	}
}
