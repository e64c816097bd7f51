package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RestateTargetName is the name under which the Restate peer target is
// registered (--target restate=<ingress URL>).
const RestateTargetName = "restate"

func init() {
	RegisterTarget(RestateTargetName, NewRestateTarget)
}

// ErrRestate marks an answer from Restate's ingress that is not a success
// (a non-2xx status or a body that does not decode); the error text carries
// the method, path, status and the start of the body.
var ErrRestate = errors.New("loadgen: restate ingress")

// restateMaxConns bounds the keep-alive connections to the ingress; it is
// above any concurrency the load generator uses, so no call waits for a
// connection.
const restateMaxConns = 1024

// RestateTarget drives the RS-1 peer written as Restate virtual objects
// (loadgen/peers/restate) through Restate's HTTP ingress:
//
//	Location   POST /Driver/<id>/location/send   (202 once Restate has durably accepted the invocation)
//	Request    POST /Passenger/<id>/request      (request-response; the body is rides/outcome)
//	Driver ... POST /<Object>/<id>/get           (read-only shared handlers)
//	Events     POST /Events/ride-events/get
//
// It is safe for concurrent use; Close releases idle connections.
type RestateTarget struct {
	base   string // ingress URL without a trailing slash
	client *http.Client
}

var _ Target = (*RestateTarget)(nil)

// NewRestateTarget returns a Target for the Restate ingress at ingressURL,
// e.g. "http://127.0.0.1:28080". It does not contact the server.
func NewRestateTarget(ingressURL string) (Target, error) {
	u, err := url.Parse(ingressURL)
	if err != nil {
		return nil, fmt.Errorf("loadgen: restate target URL %q: %w", ingressURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("loadgen: restate target URL %q: want http(s)://host:port[/prefix]", ingressURL)
	}
	tr := &http.Transport{
		Proxy:               nil, // loopback peers only; never a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        restateMaxConns,
		MaxIdleConnsPerHost: restateMaxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &RestateTarget{
		base:   strings.TrimRight(u.String(), "/"),
		client: &http.Client{Transport: tr},
	}, nil
}

// Name returns "restate".
func (t *RestateTarget) Name() string { return RestateTargetName }

// restatePath builds /<object>/<key>/<handler>[/send] with the key escaped
// as one path segment.
func restatePath(object, key, handler string, send bool) string {
	p := "/" + object + "/" + url.PathEscape(key) + "/" + handler
	if send {
		p += "/send"
	}
	return p
}

// cellBody is the body of rides/location and rides/request.
func cellBody(cell string) []byte {
	b, _ := json.Marshal(struct {
		Cell string `json:"cell"`
	}{cell})
	return b
}

// call POSTs body to path and decodes a 2xx JSON answer into out (when out
// is not nil). A nil body is sent empty and without a content type, which
// is what Restate's ingress demands of handlers that take no input.
func (t *RestateTarget) call(ctx context.Context, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+path, rd)
	if err != nil {
		return fmt.Errorf("loadgen: restate %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("loadgen: restate POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("loadgen: restate POST %s: reading body: %w", path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: POST %s: status %d: %s", ErrRestate, path, resp.StatusCode, excerpt(data))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: POST %s: decoding %s: %v", ErrRestate, path, excerpt(data), err)
	}
	return nil
}

func excerpt(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Location sends rides/location to driver one-way; it returns once Restate
// answers 202, i.e. once the invocation is appended to Restate's durable
// log.
func (t *RestateTarget) Location(ctx context.Context, driver, cell string) error {
	return t.call(ctx, restatePath("Driver", driver, "location", true), cellBody(cell), nil)
}

// Request sends rides/request to passenger and waits for the ride's outcome.
func (t *RestateTarget) Request(ctx context.Context, passenger, cell string) (Outcome, error) {
	var o Outcome
	err := t.call(ctx, restatePath("Passenger", passenger, "request", false), cellBody(cell), &o)
	return o, err
}

// restateEvent is a rides/event record as the Events object returns it.
type restateEvent struct {
	Kind      string `json:"kind"`
	Ride      string `json:"ride"`
	Driver    string `json:"driver"`
	Passenger string `json:"passenger"`
}

// Events returns the whole ride-events log in append order.
func (t *RestateTarget) Events(ctx context.Context) ([]RideEvent, error) {
	var recs []restateEvent
	if err := t.call(ctx, restatePath("Events", "ride-events", "get", false), nil, &recs); err != nil {
		return nil, err
	}
	out := make([]RideEvent, len(recs))
	for i, r := range recs {
		out[i] = RideEvent(r)
	}
	return out, nil
}

// Driver reads driver id's state.
func (t *RestateTarget) Driver(ctx context.Context, id string) (DriverState, error) {
	return restateGet[DriverState](ctx, t, "Driver", id)
}

// Passenger reads passenger id's state.
func (t *RestateTarget) Passenger(ctx context.Context, id string) (PassengerState, error) {
	return restateGet[PassengerState](ctx, t, "Passenger", id)
}

// Ride reads ride id's state.
func (t *RestateTarget) Ride(ctx context.Context, id string) (RideState, error) {
	return restateGet[RideState](ctx, t, "Ride", id)
}

// Cell reads geocell id's free set.
func (t *RestateTarget) Cell(ctx context.Context, id string) (CellState, error) {
	return restateGet[CellState](ctx, t, "GeoCell", id)
}

// restateGet calls the shared get handler of object's instance id and
// decodes its view.
func restateGet[V any](ctx context.Context, t *RestateTarget, object, id string) (V, error) {
	var v V
	err := t.call(ctx, restatePath(object, id, "get", false), nil, &v)
	return v, err
}

// Close releases the idle connections to the ingress.
func (t *RestateTarget) Close() error {
	t.client.CloseIdleConnections()
	return nil
}
