package cluster

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi"
)

// serveAdmin serves node n's admin API (httpapi, as cmd/engine does) on ln.
func serveAdmin(t *testing.T, n *Node, ln net.Listener) {
	t.Helper()
	s, err := httpapi.New(httpapi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(n); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeAdmin(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.ShutdownAdmin(ctx)
	})
}

// getState GETs /state/<addr> from base; forwarded sets ForwardedHeader as
// a forwarding node does.
func getState(t *testing.T, base string, addr engine.Address, forwarded bool) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/state/"+addr.Namespace+"/"+addr.Type+"/"+addr.ID, nil)
	if forwarded {
		req.Header.Set(httpapi.ForwardedHeader, "test")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s state of %s: %v", base, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// countOf is the "n" value of a /state answer.
func countOf(t *testing.T, body string) int {
	t.Helper()
	var v struct {
		State map[string]struct {
			Value json.RawMessage `json:"value"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("state answer %q: %v", body, err)
	}
	var n int
	if err := json.Unmarshal(v.State["n"].Value, &n); err != nil {
		t.Fatalf("state answer %q has no count: %v", body, err)
	}
	return n
}

func TestForwardedHeaderAgrees(t *testing.T) {
	if ForwardedHeader != httpapi.ForwardedHeader {
		t.Fatalf("cluster.ForwardedHeader %q != httpapi.ForwardedHeader %q", ForwardedHeader, httpapi.ForwardedHeader)
	}
	for _, ok := range []string{"", "http://127.0.0.1:9090", "https://node-1.example:9443/"} {
		if err := ValidateAdminURL(ok); err != nil {
			t.Errorf("ValidateAdminURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"127.0.0.1:9090", "http://", "http://host", "ftp://host:1", "http://host:1/state", "http://host:1?x=1"} {
		if err := ValidateAdminURL(bad); err == nil {
			t.Errorf("ValidateAdminURL(%q) accepted it", bad)
		}
	}
}

// TestForwardStateAnyNode: four nodes, a, b and c serving their admin API
// with an advertised URL, d advertising none. A counter's state reads the
// same on a, b and c whoever owns it; a counter of d's is a clear 421
// naming d; a forwarded read that reaches a node that does not own the
// address is answered 421 there, never forwarded again, even when the two
// nodes' views of the owner point at each other.
func TestForwardStateAnyNode(t *testing.T) {
	c, urls := startServedCluster(t)
	owner, byOwner, want := countersOnEveryNode(t, c)
	checkReadsOnEveryNode(t, urls, owner, want)
	checkNoForwardingLoop(t, c, urls, byOwner["c"][0])
}

// startServedCluster starts nodes a, b and c, each serving its admin API
// at an advertised URL, and d, which advertises none.
func startServedCluster(t *testing.T) (*testCluster, map[string]string) {
	c := newTestCluster(t, 16)
	served := []string{"a", "b", "c"}
	lns, urls := map[string]net.Listener{}, map[string]string{}
	for _, name := range served {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[name], urls[name] = ln, "http://"+ln.Addr().String()
	}
	c.config = func(cfg *Config) { cfg.AdminURL = urls[cfg.Node] }
	for _, name := range []string{"a", "b", "c", "d"} {
		n := c.start(name)
		if ln, ok := lns[name]; ok {
			serveAdmin(t, n, ln)
		}
	}
	c.settled(30 * time.Second)
	return c, urls
}

// countersOnEveryNode picks counters until every node owns some, sends
// each 1 to 3 increments through any node and waits for the counts.
func countersOnEveryNode(t *testing.T, c *testCluster) (owner map[int]string, byOwner map[string][]int, want map[int]int) {
	owner, byOwner, want = map[int]string{}, map[string][]int{}, map[int]int{}
	for id := 0; id < 200 && len(byOwner) < 4; id++ {
		p := PartitionOfAddress(counter(id), c.parts)
		for name, n := range c.nodes {
			if slices.Contains(n.Owned(), p) {
				owner[id] = name
				byOwner[name] = append(byOwner[name], id)
			}
		}
	}
	if len(byOwner) < 4 {
		t.Fatalf("counters do not cover every node: %v", byOwner)
	}
	for id := range owner {
		for i := range id%3 + 1 {
			c.send(id+i, counter(id), engine.Message{Type: "inc", Value: []byte("d")})
		}
		want[id] = id%3 + 1
	}
	c.waitCounts(want, 30*time.Second)
	return owner, byOwner, want
}

// checkReadsOnEveryNode: each counter reads the same on a, b and c as on
// its owner; one of d's is a 421 naming d; a forwarded read reaching a
// non-owner is 421 there.
func checkReadsOnEveryNode(t *testing.T, urls map[string]string, owner map[int]string, want map[int]int) {
	served := []string{"a", "b", "c"}
	for id, o := range owner {
		addr := counter(id)
		if o == "d" {
			for _, name := range served {
				status, body := getState(t, urls[name], addr, false)
				if status != http.StatusMisdirectedRequest || !strings.Contains(body, "node d") || !strings.Contains(body, "advertises no admin URL") {
					t.Errorf("state of %s (owned by d, no URL) on %s: %d %s; want 421 naming node d", addr, name, status, body)
				}
			}
			continue
		}
		_, local := getState(t, urls[o], addr, true) // the owner itself
		if got := countOf(t, local); got != want[id] {
			t.Fatalf("state of %s on its owner %s: count %d, want %d", addr, o, got, want[id])
		}
		for _, name := range served {
			status, body := getState(t, urls[name], addr, false)
			if status != http.StatusOK || body != local {
				t.Errorf("state of %s (owned by %s) on %s: %d %s; want 200 %s", addr, o, name, status, body, local)
			}
			if name == o {
				continue
			}
			// A forwarded read that reaches a non-owner: 421, no new hop.
			status, body = getState(t, urls[name], addr, true)
			if status != http.StatusMisdirectedRequest {
				t.Errorf("forwarded state read of %s (owned by %s) on non-owner %s: %d %s; want 421", addr, o, name, status, body)
			}
		}
	}
}

// checkNoForwardingLoop: views that point at each other. a believes b owns
// counter id's partition, b believes a does, and c owns it. The read on a
// goes to b, which answers 421 instead of sending it back to a; a then
// asks the group again and reaches c.
func checkNoForwardingLoop(t *testing.T, c *testCluster, urls map[string]string, id int) {
	p := PartitionOfAddress(counter(id), c.parts)
	_, local := getState(t, urls["c"], counter(id), true)
	for n, o := range map[string]string{"a": "b", "b": "a"} {
		f := &c.nodes[n].fwd
		f.init()
		f.mu.Lock()
		f.owners[p] = o
		f.ownersAt = time.Now().Add(time.Hour) // trusted for the whole read
		f.mu.Unlock()
	}
	status, body := getState(t, urls["a"], counter(id), false)
	if status != http.StatusOK || body != local {
		t.Fatalf("state of %s (owned by c) on a, with a and b each believing the other owns it: %d %s; want 200 %s", counter(id), status, body, local)
	}
	// With b's view still wrong, b itself cannot find the owner twice over:
	// its one retry asks the group.
	status, body = getState(t, urls["b"], counter(id), false)
	if status != http.StatusOK || body != local {
		t.Fatalf("state of %s on b after a's refresh: %d %s", counter(id), status, body)
	}
}
