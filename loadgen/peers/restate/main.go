// Command restate-rides is the RS-1 ride-sharing workload (workload-rides.md)
// written as Restate virtual objects with the Restate Go SDK: the peer that
// scripts/bench-peers.sh measures beside shardfn.
//
// It serves the SDK endpoint (HTTP/2 cleartext) on -listen; a Restate server
// is told about it with POST /deployments on its admin port, and clients then
// call the objects through Restate's HTTP ingress:
//
//	POST /Driver/<id>/location/send   {"cell":"x-y"}   one-way
//	POST /Passenger/<id>/request      {"cell":"x-y"}   -> rides/outcome
//	POST /<Driver|Passenger|Ride|GeoCell>/<id>/get     -> state view
//	POST /Events/ride-events/get                       -> [rides/event ...]
//
// The objects mirror the engine's rides package message for message:
// Driver{cell, joined, status, ride}, Passenger{ride, rides, seq},
// GeoCell{free}, Ride{passenger, driver, cell, status, reply, tries}. Every
// hop between objects is a one-way send (restate.ObjectSend); a driver's
// finish is a delayed send to itself. The reply of a request is a Restate
// awakeable: Passenger.request is a shared handler (it does not hold the
// passenger's lock) that creates the awakeable and sends its id to the
// exclusive Passenger.start, which passes it along init/find/offer; the ride
// resolves it with the outcome. The ride-events egress is an Events object
// (key "ride-events") holding an append-only log, one extra hop per record,
// since Restate has no egress log.
//
// The process keeps no state of its own: all state lives in Restate, so the
// handlers are safe for any number of concurrent invocations.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/restatedev/sdk-go/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9180", "address of the SDK endpoint (loopback)")
	var cfg Config
	flag.DurationVar(&cfg.FinishDelay, "finish-delay", 2*time.Second, "mean delay from accept to finish")
	flag.Float64Var(&cfg.FinishJitter, "finish-jitter", 0.25, "finish delay spread as a fraction of the delay, [0, 0.95]")
	flag.IntVar(&cfg.MaxRetries, "max-retries", 3, "times a ride asks its cell again after a decline")
	flag.IntVar(&cfg.Grid, "grid", 100, "side G of the G x G grid of cells")
	flag.IntVar(&cfg.EventsBucket, "events-bucket", 64, "ride-events records per state entry")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	flag.Parse()
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "restate-rides:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "restate-rides: -log-level:", err)
		os.Exit(2)
	}
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})

	r := &rides{cfg: cfg}
	srv := server.NewRestate().WithLogger(h, true)
	for _, d := range r.definitions() {
		srv = srv.Bind(d)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.New(h).Warn("restate-rides serving", "listen", *listen, "config", fmt.Sprintf("%+v", cfg))
	if err := srv.Start(ctx, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "restate-rides:", err)
		os.Exit(1)
	}
}
