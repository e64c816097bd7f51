// Package testserver runs the shardfn server in-process for tests: an
// engine with the given function types behind the HTTP ingress and admin
// listeners on free loopback ports, wired as cmd/engine wires them.
package testserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/httpapi"
)

// Server is a running in-process server.
type Server struct {
	Engine *engine.Engine
	HTTP   *httpapi.Server
	// Ingress and Admin are base URLs, e.g. http://127.0.0.1:41234.
	Ingress, Admin string
}

// Start opens an engine on opts (DataDir defaults to a temporary
// directory, Shards to 2) with specs and serves it; t's cleanup stops it.
func Start(t testing.TB, opts engine.Options, specs ...engine.FunctionSpec) *Server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = time.Second
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Logger = log
	srv, err := httpapi.New(httpapi.Options{Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeIngress(ing) }()
	go func() { _ = srv.ServeAdmin(adm) }()
	e, err := engine.Open(opts, specs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetEngine(e); err != nil {
		t.Fatal(err)
	}
	s := &Server{Engine: e, HTTP: srv, Ingress: "http://" + ing.Addr().String(), Admin: "http://" + adm.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownIngress(ctx)
		_ = e.Close()
		_ = srv.ShutdownAdmin(ctx)
	})
	return s
}
