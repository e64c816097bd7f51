package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/shardfn/shardfn/engine"
)

// forwardingEngine is an engine whose instance "ops/fn/remote" lives
// elsewhere: ForwardOps records what it was asked and answers for it.
type forwardingEngine struct {
	*engine.Engine
	mu    sync.Mutex
	asked []string // "METHOD pathQuery body"
}

func (f *forwardingEngine) ForwardOps(_ context.Context, addr engine.Address, method, pathQuery string, body []byte) (*http.Response, error) {
	if addr.ID != "remote" {
		return nil, nil
	}
	f.mu.Lock()
	f.asked = append(f.asked, method+" "+pathQuery+" "+string(body))
	f.mu.Unlock()
	return &http.Response{StatusCode: http.StatusAccepted, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"from":"owner"}`))}, nil
}

// TestOpsForwarded: with an OpsForwarder, the state writes and the
// instance inspection of an address that lives elsewhere are handed to it
// with their method, escaped path, query and body, and its answer is
// relayed; a request that was itself forwarded, and an address that lives
// here, are answered by the local engine.
func TestOpsForwarded(t *testing.T) {
	f := &forwardingEngine{Engine: opsEngine(t)}
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(f); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.AdminHandler())
	defer ts.Close()
	for _, step := range []struct{ method, path, body, asked string }{
		{"PUT", "/state/ops/fn/remote/count", `{"text":"4"}`, `PUT /state/ops/fn/remote/count {"text":"4"}`},
		{"DELETE", "/state/ops/fn/remote/count", "", `DELETE /state/ops/fn/remote/count `},
		{"POST", "/state/ops/fn/remote", `{"set":{"count":{"text":"5"}}}`, `POST /state/ops/fn/remote {"set":{"count":{"text":"5"}}}`},
		{"GET", "/admin/instances/ops/fn/remote?max=3", "", `GET /admin/instances/ops/fn/remote?max=3 `},
	} {
		f.asked = nil
		code, body := call(t, step.method, ts.URL+step.path, step.body)
		if code != http.StatusAccepted || body != `{"from":"owner"}` || len(f.asked) != 1 || f.asked[0] != step.asked {
			t.Errorf("%s %s: %d %s, forwarder asked %q; want the owner's 202 and %q", step.method, step.path, code, body, f.asked, step.asked)
		}
	}
	// Forwarded already: the local engine answers, the forwarder is not asked.
	f.asked = nil
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/state/ops/fn/remote/count", strings.NewReader(`{"text":"6"}`))
	req.Header.Set(ForwardedHeader, "node-x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"value":6`) || len(f.asked) != 0 {
		t.Errorf("forwarded PUT: %d %s, forwarder asked %q; want a local 200 with count 6", resp.StatusCode, b, f.asked)
	}
	if code, body := call(t, "PUT", ts.URL+"/state/ops/fn/here/count", `{"text":"7"}`); code != http.StatusOK || !strings.Contains(body, `"value":7`) {
		t.Errorf("PUT of a local address: %d %s; want 200 with count 7", code, body)
	}
}
