package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shardfn/shardfn/tracing"
)

// TestTracing: OTEL_EXPORTER_OTLP_ENDPOINT switches tracing on; an
// ingress request with a sampled traceparent is traced through its
// invocations, and the spans reach the collector by the time the server
// has exited.
func TestTracing(t *testing.T) {
	col, err := tracing.NewCollector()
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.Endpoint())
	t.Setenv("OTEL_SERVICE_NAME", "shardfn-e2e")
	bin := buildBinary(t)
	s := startServer(t, bin, filepath.Join(t.TempDir(), "data"))
	on := false
	for _, l := range s.logLines() {
		var m struct{ Msg, Setup string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Msg == "tracing on" {
			on = strings.Contains(m.Setup, "otlp http/protobuf to "+col.Endpoint()) && strings.Contains(m.Setup, fmt.Sprintf("parentbased_traceidratio %g (default)", tracing.DefaultRatio))
		}
	}
	if !on {
		t.Fatalf("no \"tracing on\" log line naming the collector and the default sampler")
	}

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest("POST", s.ingress+"/rides/driver/d-1", strings.NewReader(`{"cell":"1-1"}`))
	req.Header.Set("Content-Type", "application/vnd.rides/location")
	req.Header.Set("traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("location: %d", resp.StatusCode)
	}
	if err := s.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	names := map[string]bool{}
	for _, sp := range col.Received() {
		if hex.EncodeToString(sp.GetTraceId()) == traceID {
			names[sp.GetName()] = true
		}
	}
	if !names["send rides/driver"] || !names["invoke rides/driver"] {
		t.Fatalf("spans of the request's trace at the collector: %v", names)
	}
}
