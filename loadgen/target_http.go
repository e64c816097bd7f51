package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/engine"
	"github.com/shardfn/shardfn/rides"
	"github.com/valyala/fasthttp"
)

// HTTP is the target of a running cmd/engine, spoken to over its HTTP
// ingress (fasthttp client, keep-alive, up to Conns connections). Safe for
// concurrent use.
//
// Formats it expects beyond workload-rides.md (tolerant decoders accept
// several shapes):
//   - GET /egress/ride-events?from=N&max=M answers {"records":[{"offset",
//     "type", "body":<JSON> | "body_b64"}], "next"} (package httpapi); a
//     bare array, newline-separated JSON and records that are the event
//     object itself are accepted too.
//   - GET <admin>/state/rides/<type>/<id> answers {"address", "state":
//     {"<name>": {"type", "value":<JSON> | "text" | "value_b64"}}}.
//   - GET <admin>/metrics is Prometheus text with shardfn_invocations_total
//     and process_resident_memory_bytes.
type HTTP struct {
	base, admin string
	c           *fasthttp.Client
}

var (
	_ Target            = (*HTTP)(nil)
	_ InvocationCounter = (*HTTP)(nil)
	_ MemoryReporter    = (*HTTP)(nil)
)

// NewHTTP makes an HTTP target for the engine at base (e.g.
// "http://127.0.0.1:8080"); admin defaults to base; conns defaults to 1024.
func NewHTTP(base, admin string, conns int) (*HTTP, error) {
	base = strings.TrimRight(base, "/")
	if _, err := url.Parse(base); err != nil {
		return nil, fmt.Errorf("loadgen: bad target URL %q: %w", base, err)
	}
	if admin == "" {
		admin = base
	}
	admin = strings.TrimRight(admin, "/")
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	if conns <= 0 {
		conns = 1024
	}
	return &HTTP{base: base, admin: admin, c: &fasthttp.Client{
		MaxConnsPerHost:          conns,
		MaxIdleConnDuration:      time.Minute,
		ReadTimeout:              30 * time.Second,
		WriteTimeout:             30 * time.Second,
		NoDefaultUserAgentHeader: true,
	}}, nil
}

// Name implements Target.
func (h *HTTP) Name() string { return h.base }

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(30 * time.Second)
}

// do runs one request; it returns the status and a copy of the body.
func (h *HTTP) do(ctx context.Context, method, url, ctype string, body []byte) (int, []byte, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if ctype != "" {
		req.Header.SetContentType(ctype)
	}
	if body != nil {
		req.SetBodyRaw(body)
	}
	if err := h.c.DoDeadline(req, resp, deadline(ctx)); err != nil {
		return 0, nil, fmt.Errorf("loadgen: %s %s: %w", method, url, err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

func statusErr(method, url string, code int, body []byte) error {
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Errorf("loadgen: %s %s: HTTP %d: %s", method, url, code, bytes.TrimSpace(body))
}

// Location implements Target.
func (h *HTTP) Location(ctx context.Context, driver, cell string) error {
	u := h.base + "/rides/driver/" + url.PathEscape(driver)
	code, body, err := h.do(ctx, "POST", u, "application/vnd."+rides.MsgLocation, rides.AppendCellBody(nil, cell))
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return statusErr("POST", u, code, body)
	}
	return nil
}

// Request implements Target.
func (h *HTTP) Request(ctx context.Context, passenger, cell string) (Outcome, error) {
	u := h.base + "/rides/passenger/" + url.PathEscape(passenger) + "?wait=5s"
	code, body, err := h.do(ctx, "POST", u, "application/vnd."+rides.MsgRequest, rides.AppendCellBody(nil, cell))
	if err != nil {
		return Outcome{}, err
	}
	if code/100 != 2 {
		return Outcome{}, statusErr("POST", u, code, body)
	}
	o, err := rides.DecodeOutcome(body)
	if err != nil {
		return Outcome{}, fmt.Errorf("loadgen: outcome %q: %w", body, err)
	}
	return Outcome{Ride: o.Ride, Driver: o.Driver, Failed: o.Failed}, nil
}

// Events implements Target.
func (h *HTTP) Events(ctx context.Context) ([]RideEvent, error) {
	var out []RideEvent
	for {
		u := h.base + "/egress/" + rides.EgressName + "?from=" + strconv.Itoa(len(out)) + "&max=10000"
		code, body, err := h.do(ctx, "GET", u, "", nil)
		if err != nil {
			return nil, err
		}
		if code/100 != 2 {
			return nil, statusErr("GET", u, code, body)
		}
		evs, err := decodeEgress(body)
		if err != nil {
			return nil, fmt.Errorf("loadgen: GET %s: %w", u, err)
		}
		if len(evs) == 0 {
			return out, nil
		}
		out = append(out, evs...)
	}
}

// decodeEgress accepts the shapes listed on HTTP.
func decodeEgress(body []byte) ([]RideEvent, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil
	}
	var raws []json.RawMessage
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, err
		}
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err == nil {
			if r, ok := obj["records"]; ok {
				if err := json.Unmarshal(r, &raws); err != nil {
					return nil, err
				}
				break
			}
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
				raws = append(raws, append(json.RawMessage(nil), l...))
			}
		}
	default:
		return nil, fmt.Errorf("unrecognised egress body %.80q", body)
	}
	out := make([]RideEvent, 0, len(raws))
	for _, r := range raws {
		e, err := decodeEgressRecord(r)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func decodeEgressRecord(r json.RawMessage) (RideEvent, error) {
	var rec struct {
		Kind    string          `json:"kind"`
		Value   json.RawMessage `json:"value"`
		Body    json.RawMessage `json:"body"`
		BodyB64 *string         `json:"body_b64"`
	}
	if err := json.Unmarshal(r, &rec); err != nil {
		return RideEvent{}, err
	}
	if rec.Kind != "" {
		var e RideEvent
		err := json.Unmarshal(r, &e)
		return e, err
	}
	v := bytes.TrimSpace(rec.Value)
	switch {
	case len(rec.Body) > 0:
		v = rec.Body
	case rec.BodyB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*rec.BodyB64)
		if err != nil {
			return RideEvent{}, fmt.Errorf("egress record body_b64: %w", err)
		}
		v = b
	}
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return RideEvent{}, err
		}
		if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) > 0 && b[0] == '{' {
			v = b
		} else {
			v = []byte(s)
		}
	}
	e, err := rides.DecodeEvent(v)
	if err != nil {
		return RideEvent{}, fmt.Errorf("egress record %.80q: %w", r, err)
	}
	return RideEvent(e), nil
}

// stateValues reads an instance's state from the admin API as name ->
// bytes (present values only).
func (h *HTTP) stateValues(ctx context.Context, typ, id string) (map[string][]byte, error) {
	u := h.admin + "/state/rides/" + typ + "/" + url.PathEscape(id)
	code, body, err := h.do(ctx, "GET", u, "", nil)
	if err != nil {
		return nil, err
	}
	if code == 404 {
		return map[string][]byte{}, nil
	}
	if code/100 != 2 {
		return nil, statusErr("GET", u, code, body)
	}
	m, err := decodeStateBody(body)
	if err != nil {
		return nil, fmt.Errorf("loadgen: GET %s: %w", u, err)
	}
	return m, nil
}

func decodeStateBody(body []byte) (map[string][]byte, error) {
	// The shardfn admin form:
	// {"address":"...","state":{"<name>":{"type":"...","value":<JSON>|"text":"..."|"value_b64":"..."}}}
	var obj struct {
		State map[string]struct {
			Type     string                     `json:"type"`
			Value    json.RawMessage            `json:"value"`
			Text     *string                    `json:"text"`
			ValueB64 *string                    `json:"value_b64"`
			Present  *bool                      `json:"present"`
			Map      map[string]json.RawMessage `json:"map"`
			Entries  int                        `json:"entries"`
		} `json:"state"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for name, v := range obj.State {
		switch {
		case v.Type == engine.TypeMap:
			// A map state: its keys, as a set (rides.TypeSet).
			if v.Entries > len(v.Map) {
				return nil, fmt.Errorf("map state %q has %d entries, of which the read shows only %d", name, v.Entries, len(v.Map))
			}
			keys := make([]string, 0, len(v.Map))
			for k := range v.Map {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var set []byte
			for _, k := range keys {
				set = binary.AppendUvarint(set, uint64(len(k)))
				set = append(set, k...)
			}
			out[name] = set
		case v.Present != nil && !*v.Present:
		case v.Text != nil:
			out[name] = []byte(*v.Text)
		case v.ValueB64 != nil:
			b, err := base64.StdEncoding.DecodeString(*v.ValueB64)
			if err != nil {
				return nil, fmt.Errorf("state %q: value_b64: %w", name, err)
			}
			out[name] = b
		case len(v.Value) > 0 && string(v.Value) != "null":
			var s string
			if json.Unmarshal(v.Value, &s) == nil && v.Type == engine.TypeString {
				out[name] = []byte(s)
			} else {
				out[name] = []byte(v.Value) // JSON bytes, or a number for long/int
			}
		}
	}
	return out, nil
}

// Driver implements Target.
func (h *HTTP) Driver(ctx context.Context, id string) (DriverState, error) {
	m, err := h.stateValues(ctx, rides.TypeDriver, id)
	return DriverState{Cell: string(m["cell"]), Joined: string(m["joined"]), Status: string(m["status"]), Ride: string(m["ride"])}, err
}

// Passenger implements Target.
func (h *HTTP) Passenger(ctx context.Context, id string) (PassengerState, error) {
	m, err := h.stateValues(ctx, rides.TypePassenger, id)
	if err != nil {
		return PassengerState{}, err
	}
	n, err := longValue(m["rides"])
	return PassengerState{Ride: string(m["ride"]), Rides: n}, err
}

// longValue decodes a TypeLong state (protobuf LongWrapper) or, if the
// server rendered it as text, a decimal number.
func longValue(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		return n, nil
	}
	return engine.DecodeLongWrapper(b)
}

// Ride implements Target.
func (h *HTTP) Ride(ctx context.Context, id string) (RideState, error) {
	m, err := h.stateValues(ctx, rides.TypeRide, id)
	return RideState{Passenger: string(m["passenger"]), Driver: string(m["driver"]), Cell: string(m["cell"]), Status: string(m["status"])}, err
}

// Cell implements Target.
func (h *HTTP) Cell(ctx context.Context, id string) (CellState, error) {
	m, err := h.stateValues(ctx, rides.TypeGeocell, id)
	if err != nil {
		return CellState{}, err
	}
	free, err := rides.DecodeSet(m["free"])
	return CellState{Free: free}, err
}

// metric reads the sum of one metric family from the admin /metrics.
func (h *HTTP) metric(ctx context.Context, name string) (float64, error) {
	u := h.admin + "/metrics"
	code, body, err := h.do(ctx, "GET", u, "", nil)
	if err != nil {
		return 0, err
	}
	if code/100 != 2 {
		return 0, statusErr("GET", u, code, body)
	}
	return promSum(body, name)
}

// promSum sums the samples of metric name in Prometheus text format.
func promSum(body []byte, name string) (float64, error) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("loadgen: no metric %s", name)
	}
	return sum, nil
}

// Invocations implements InvocationCounter.
func (h *HTTP) Invocations(ctx context.Context) (uint64, error) {
	v, err := h.metric(ctx, "shardfn_invocations_total")
	return uint64(v), err
}

// RSS implements MemoryReporter.
func (h *HTTP) RSS(ctx context.Context) (int64, error) {
	v, err := h.metric(ctx, "process_resident_memory_bytes")
	return int64(v), err
}

// Close implements Target.
func (h *HTTP) Close() error {
	h.c.CloseIdleConnections()
	return nil
}
