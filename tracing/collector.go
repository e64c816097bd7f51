package tracing

import (
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Collector is a minimal in-process OTLP/HTTP trace receiver: it accepts
// ExportTraceServiceRequest protobufs (gzip or not) at /v1/traces, decodes
// them and counts their spans. It stands in for an OpenTelemetry collector
// in tests and in the tracing overhead benchmark (cmd/loadgen
// --tracing-overhead), so that the exporter does all its real work:
// batching, encoding and an HTTP request per batch.
type Collector struct {
	srv      *http.Server
	ln       net.Listener
	spans    atomic.Int64
	requests atomic.Int64
	last     atomic.Pointer[coltracepb.ExportTraceServiceRequest]

	mu   sync.Mutex
	kept []*tracepb.Span // the first keepSpans received
}

// keepSpans bounds the spans a Collector keeps for Received.
const keepSpans = 1000

// NewCollector starts a Collector on a free loopback port.
func NewCollector() (*Collector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Collector{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", c.serve)
	c.srv = &http.Server{Handler: mux}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// Endpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT.
func (c *Collector) Endpoint() string { return "http://" + c.ln.Addr().String() }

// Spans is the number of spans received.
func (c *Collector) Spans() int64 { return c.spans.Load() }

// Requests is the number of export requests received.
func (c *Collector) Requests() int64 { return c.requests.Load() }

// Last is the last export request received (nil before the first).
func (c *Collector) Last() *coltracepb.ExportTraceServiceRequest { return c.last.Load() }

// Received returns the first spans received (at most 1000).
func (c *Collector) Received() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.kept...)
}

// Close stops the collector.
func (c *Collector) Close() error { return c.srv.Close() }

func (c *Collector) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := 0
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
			for _, sp := range ss.GetSpans() {
				if len(c.kept) < keepSpans {
					c.kept = append(c.kept, sp)
				}
			}
		}
	}
	c.mu.Unlock()
	c.spans.Add(int64(n))
	c.requests.Add(1)
	c.last.Store(&req)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}
