package loadgen

import (
	"context"
	"fmt"
	"net"

	"github.com/valyala/fasthttp"
)

// Baseline is the HTTP ceiling: a bare fasthttp server in this process that
// answers every request with 200 "ok", driven by the HTTP target's client.
// It serves location events only. Safe for concurrent use.
type Baseline struct {
	*HTTP
	ln  net.Listener
	srv *fasthttp.Server
}

var _ LocationOnly = (*Baseline)(nil)

// NewBaseline starts the server on a free loopback port.
func NewBaseline(conns int) (*Baseline, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loadgen: baseline listen: %w", err)
	}
	srv := &fasthttp.Server{
		Handler: func(c *fasthttp.RequestCtx) {
			c.SetContentType("text/plain")
			c.SetBodyString("ok")
		},
		NoDefaultServerHeader: true,
	}
	go srv.Serve(ln)
	h, err := NewHTTP("http://"+ln.Addr().String(), "", conns)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &Baseline{HTTP: h, ln: ln, srv: srv}, nil
}

// Name implements Target.
func (b *Baseline) Name() string { return "baseline" }

// LocationOnly implements LocationOnly.
func (b *Baseline) LocationOnly() bool { return true }

// Request implements Target: not served.
func (b *Baseline) Request(context.Context, string, string) (Outcome, error) {
	return Outcome{}, ErrUnsupported
}

// Events implements Target: none.
func (b *Baseline) Events(context.Context) ([]RideEvent, error) { return nil, nil }

// Driver implements Target: not served.
func (b *Baseline) Driver(context.Context, string) (DriverState, error) {
	return DriverState{}, ErrUnsupported
}

// Passenger implements Target: not served.
func (b *Baseline) Passenger(context.Context, string) (PassengerState, error) {
	return PassengerState{}, ErrUnsupported
}

// Ride implements Target: not served.
func (b *Baseline) Ride(context.Context, string) (RideState, error) {
	return RideState{}, ErrUnsupported
}

// Cell implements Target: not served.
func (b *Baseline) Cell(context.Context, string) (CellState, error) {
	return CellState{}, ErrUnsupported
}

// Invocations implements InvocationCounter: none.
func (b *Baseline) Invocations(context.Context) (uint64, error) { return 0, ErrUnsupported }

// RSS implements MemoryReporter: this process (server and client).
func (b *Baseline) RSS(context.Context) (int64, error) { return SelfRSS() }

// Close implements Target.
func (b *Baseline) Close() error {
	b.HTTP.Close()
	return b.srv.Shutdown()
}
