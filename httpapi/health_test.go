package httpapi

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// TestHealthDegradedWhileEndpointsStuck: /health stays 200 but says
// "degraded" and names every stuck remote endpoint; with none it is "ok"
// again.
func TestHealthDegradedWhileEndpointsStuck(t *testing.T) {
	var mu sync.Mutex
	var stuck []StuckEndpoint
	s, err := New(Options{StuckEndpoints: func() []StuckEndpoint {
		mu.Lock()
		defer mu.Unlock()
		return stuck
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetEngine(newFake()); err != nil {
		t.Fatal(err)
	}
	_, adm := testServer(t, s)
	if r := do(t, "GET", adm+"/health", "", ""); r.status != 200 || r.body != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthy: %d %q", r.status, r.body)
	}
	since := time.Date(2025, 3, 1, 12, 0, 0, 500e6, time.UTC)
	mu.Lock()
	stuck = []StuckEndpoint{
		{Endpoint: "shop/*", URL: "http://shop:8000/{function.name}", Since: since, ConsecutiveFailures: 12, RetryingBatches: 3, LastError: `dial tcp: connection "refused"`},
		{Endpoint: "geo/cell", URL: "http://geo/{function.name}", Since: since, ConsecutiveFailures: 1, RetryingBatches: 1, LastError: "HTTP 503"},
	}
	mu.Unlock()
	r := do(t, "GET", adm+"/health", "", "")
	var got struct {
		Status string
		Stuck  []struct {
			Endpoint            string `json:"endpoint"`
			URL                 string `json:"url"`
			Since               string `json:"since"`
			ConsecutiveFailures int    `json:"consecutive_failures"`
			RetryingBatches     int    `json:"retrying_batches"`
			LastErr             string `json:"last_error"`
		} `json:"stuck_endpoints"`
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &got) != nil {
		t.Fatalf("degraded: %d %q", r.status, r.body)
	}
	if got.Status != "degraded" || len(got.Stuck) != 2 || got.Stuck[0].Endpoint != "shop/*" || got.Stuck[0].URL != "http://shop:8000/{function.name}" ||
		got.Stuck[0].Since != "2025-03-01T12:00:00.500Z" || got.Stuck[0].ConsecutiveFailures != 12 || got.Stuck[0].RetryingBatches != 3 ||
		got.Stuck[0].LastErr != `dial tcp: connection "refused"` || got.Stuck[1].Endpoint != "geo/cell" {
		t.Fatalf("degraded body %q -> %+v", r.body, got)
	}
	mu.Lock()
	stuck = nil
	mu.Unlock()
	if r := do(t, "GET", adm+"/health", "", ""); r.status != 200 || r.body != "{\"status\":\"ok\"}\n" {
		t.Fatalf("recovered: %d %q", r.status, r.body)
	}
}
