package remote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/internal/yamldoc"
	"gopkg.in/yaml.v3"
)

// Module configuration kinds.
const (
	// KindHTTPEndpointV2 is StateFun's current HTTP endpoint kind.
	KindHTTPEndpointV2 = "io.statefun.endpoints.v2/http"
	// KindHTTPEndpointV1 is the older endpoint kind; its timeouts sit
	// directly under spec.
	KindHTTPEndpointV1 = "io.statefun.endpoints.v1/http"
)

// skippedKindPrefixes are StateFun component kinds that shardfn does not
// implement (Kinesis I/O). Documents of these kinds are skipped with a
// warning so that an existing StateFun module.yaml loads unchanged; any
// other unknown kind is an error (most likely a typo).
var skippedKindPrefixes = []string{
	"io.statefun.kinesis.",
}

// componentKinds are the kinds this package hands over, unparsed, in
// Module.Components: package kafka implements them.
var componentKinds = []string{
	"io.statefun.kafka.v1/ingress",
	"io.statefun.kafka.v1/egress",
}

// Defaults of endpoint settings. StateFun's own defaults are kept where they
// exist (maxNumBatchRequests, call timeout of the okhttp transport).
const (
	DefaultMaxNumBatchRequests = 1000
	DefaultCallTimeout         = time.Minute
	DefaultConnectTimeout      = 10 * time.Second
	DefaultReadTimeout         = 10 * time.Second
	DefaultWriteTimeout        = 10 * time.Second
	DefaultRetryBackoff        = 10 * time.Millisecond
	DefaultMaxRetryBackoff     = time.Second
	DefaultMaxConcurrency      = 256
	DefaultMaxRequestBytes     = 8 << 20
	DefaultMaxResponseBytes    = 32 << 20
)

// ErrModule is wrapped by every module configuration error.
var ErrModule = errors.New("remote: bad module configuration")

// Module is a parsed module.yaml: the remote function endpoints it declares.
// A Module is a plain value; it is not modified after parsing.
type Module struct {
	// Endpoints in document order; one per entry of each document's
	// functions list.
	Endpoints []Endpoint
	// Warnings lists documents that were skipped (kinds shardfn does not
	// implement), one line each, for the caller to log.
	Warnings []string
	// Components are the documents of kinds another package implements
	// (Kafka ingress and egress: package kafka parses them), in document
	// order.
	Components []Component
}

// Component is one document of a kind this package does not parse.
type Component struct {
	// Kind is the document's kind, e.g. io.statefun.kafka.v1/ingress.
	Kind string
	// Spec is the document's spec node (nil when it has none).
	Spec *yaml.Node
	// Source names the document, for messages: "document 2 (kind ...)".
	Source string
}

// Endpoint is one function pattern of an HTTP endpoint document.
type Endpoint struct {
	// Namespace and Type are the function pattern; Type is "*" for every
	// type of the namespace.
	Namespace string
	Type      string
	// URLTemplate is urlPathTemplate; "{function.name}" is replaced by the
	// invoked function type's name. Schemes: http, https, http+unix,
	// https+unix.
	URLTemplate string
	// MaxNumBatchRequests is StateFun's per-address backlog bound (default
	// 1000). The engine may read it for its per-address queue; the client
	// does not enforce it.
	MaxNumBatchRequests int
	// CallTimeout bounds one attempt (one HTTP exchange: connecting, writing
	// the request, the function's work and reading the answer), as
	// StateFun's call timeout bounds one call of its HTTP client. It is not
	// a bound on the batch: StateFun fails and restarts the job when its
	// call timeout passes, and shardfn, which has no job restart, retries
	// instead (see GiveUpAfter). ConnectTimeout bounds dialing; ReadTimeout
	// bounds the wait for the response headers after the request is
	// written; an attempt also ends after WriteTimeout + ReadTimeout when
	// that is shorter than CallTimeout.
	CallTimeout, ConnectTimeout, ReadTimeout, WriteTimeout time.Duration
	// GiveUpAfter, when positive, dead-letters a batch that is still
	// failing (with failures that may heal) this long after its first failed
	// attempt began. 0, the default, never gives up: the batch is retried
	// until the endpoint answers, while its address's later messages wait.
	GiveUpAfter time.Duration
	// MaxRetries, when positive, dead-letters a batch after that many
	// retries of failures that may heal. 0, the default, sets no bound.
	MaxRetries int
	// RetryBackoff is the first backoff (default 10ms), doubled per retry up
	// to MaxRetryBackoff (default 1s), with jitter.
	RetryBackoff, MaxRetryBackoff time.Duration
	// MaxConcurrency is the most requests in flight to this endpoint
	// (default 256, or transport.pool_size); more calls queue.
	MaxConcurrency int
	// MaxRequestBytes is the per-request byte budget (default 8 MiB): a
	// larger batch is split into sequential sub-requests.
	MaxRequestBytes int
	// MaxResponseBytes caps a response body (default 32 MiB, or
	// transport.payload_max_bytes).
	MaxResponseBytes int
	// Source names the document this endpoint came from, for messages.
	Source string
}

// Pattern returns "namespace/type" ("namespace/*" for wildcards).
func (e Endpoint) Pattern() string { return e.Namespace + "/" + e.Type }

// URL returns the request URL for the function type name fnName.
func (e Endpoint) URL(fnName string) string {
	return strings.ReplaceAll(e.URLTemplate, "{function.name}", fnName)
}

// LoadModule reads and parses the module.yaml file at path.
func LoadModule(path string) (*Module, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrModule, err)
	}
	m, err := ParseModule(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ParseModule parses a StateFun multi-document module.yaml. Every document
// is {kind, spec}. Endpoint kinds (v2 and v1 http) become Endpoints; Kafka
// kinds become Components (parsed by package kafka); Kinesis kinds are
// skipped with a warning; any other kind, a legacy
// (version 3.0) module, an unknown field or a bad value is an error naming
// the document and the field.
func ParseModule(r io.Reader) (*Module, error) {
	dec := yaml.NewDecoder(r)
	m := &Module{}
	seen := map[string]string{}
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: document %d: %v", ErrModule, doc, err)
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			n = *n.Content[0]
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			continue // empty document
		}
		p := &parser{yamldoc.Parser{Where: fmt.Sprintf("document %d", doc), Err: ErrModule}}
		eps, warn, comp, err := p.document(&n)
		if err != nil {
			return nil, err
		}
		if comp != nil {
			m.Components = append(m.Components, *comp)
		}
		if warn != "" {
			m.Warnings = append(m.Warnings, warn)
		}
		for _, ep := range eps {
			if prev, dup := seen[ep.Pattern()]; dup {
				return nil, fmt.Errorf("%w: %s: function %s already declared in %s", ErrModule, ep.Source, ep.Pattern(), prev)
			}
			seen[ep.Pattern()] = ep.Source
			m.Endpoints = append(m.Endpoints, ep)
		}
	}
	if len(m.Endpoints) == 0 && len(m.Components) == 0 {
		return nil, fmt.Errorf("%w: no function endpoints (or Kafka ingresses or egresses) declared", ErrModule)
	}
	return m, nil
}

// parser reads one document of a module.
type parser struct{ yamldoc.Parser }

func (p *parser) document(n *yaml.Node) ([]Endpoint, string, *Component, error) {
	top, err := p.Mapping(n, "(top level)")
	if err != nil {
		return nil, "", nil, err
	}
	if _, legacy := top["version"]; legacy {
		return nil, "", nil, p.Errf("version", "the legacy StateFun 3.0 module format is not supported; use kind/spec documents")
	}
	kn, ok := top["kind"]
	if !ok {
		return nil, "", nil, p.Errf("kind", "missing")
	}
	kind, err := p.Str(kn, "kind")
	if err != nil {
		return nil, "", nil, err
	}
	p.Where = fmt.Sprintf("%s (kind %s)", p.Where, kind)
	for _, pre := range skippedKindPrefixes {
		if strings.HasPrefix(kind, pre) {
			return nil, fmt.Sprintf("remote: %s skipped: shardfn does not implement this component kind", p.Where), nil, nil
		}
	}
	if slices.Contains(componentKinds, kind) {
		for k := range top {
			if k != "kind" && k != "spec" {
				return nil, "", nil, p.Errf(k, "unknown top-level field; want kind and spec")
			}
		}
		return nil, "", &Component{Kind: kind, Spec: top["spec"], Source: p.Where}, nil
	}
	if kind != KindHTTPEndpointV2 && kind != KindHTTPEndpointV1 {
		return nil, "", nil, p.Errf("kind", "unknown kind %q (supported: %s, %s, %s)", kind, KindHTTPEndpointV2, KindHTTPEndpointV1, strings.Join(componentKinds, ", "))
	}
	for k := range top {
		if k != "kind" && k != "spec" {
			return nil, "", nil, p.Errf(k, "unknown top-level field; want kind and spec")
		}
	}
	sn, ok := top["spec"]
	if !ok {
		return nil, "", nil, p.Errf("spec", "missing")
	}
	eps, warn, err := p.endpoint(sn, kind == KindHTTPEndpointV1)
	return eps, warn, nil, err
}

func (p *parser) endpoint(n *yaml.Node, v1 bool) ([]Endpoint, string, error) {
	allowed := []string{"functions", "urlPathTemplate", "maxNumBatchRequests", "transport", "shardfn"}
	if v1 {
		allowed = append(allowed, "timeouts")
	}
	spec, err := p.Mapping(n, "spec", allowed...)
	if err != nil {
		return nil, "", err
	}
	ep := Endpoint{
		MaxNumBatchRequests: DefaultMaxNumBatchRequests,
		CallTimeout:         DefaultCallTimeout,
		ConnectTimeout:      DefaultConnectTimeout,
		ReadTimeout:         DefaultReadTimeout,
		WriteTimeout:        DefaultWriteTimeout,
		RetryBackoff:        DefaultRetryBackoff,
		MaxRetryBackoff:     DefaultMaxRetryBackoff,
		MaxConcurrency:      DefaultMaxConcurrency,
		MaxRequestBytes:     DefaultMaxRequestBytes,
		MaxResponseBytes:    DefaultMaxResponseBytes,
		Source:              p.Where,
	}
	un, ok := spec["urlPathTemplate"]
	if !ok {
		return nil, "", p.Errf("spec.urlPathTemplate", "missing")
	}
	if ep.URLTemplate, err = p.Str(un, "spec.urlPathTemplate"); err != nil {
		return nil, "", err
	}
	if err := checkURLTemplate(ep.URLTemplate); err != nil {
		return nil, "", p.Errf("spec.urlPathTemplate", "%v", err)
	}
	if bn, ok := spec["maxNumBatchRequests"]; ok {
		if ep.MaxNumBatchRequests, err = p.positiveInt(bn, "spec.maxNumBatchRequests"); err != nil {
			return nil, "", err
		}
	}
	if tn, ok := spec["timeouts"]; ok {
		if err := p.timeouts(tn, "spec.timeouts", &ep); err != nil {
			return nil, "", err
		}
	}
	if tn, ok := spec["transport"]; ok {
		if err := p.transport(tn, &ep); err != nil {
			return nil, "", err
		}
	}
	if xn, ok := spec["shardfn"]; ok {
		if err := p.extensions(xn, &ep); err != nil {
			return nil, "", err
		}
	}
	if ep.MaxRetryBackoff < ep.RetryBackoff {
		return nil, "", p.Errf("spec.shardfn.maxRetryBackoff", "%v is below retryBackoff %v", ep.MaxRetryBackoff, ep.RetryBackoff)
	}
	fn, ok := spec["functions"]
	if !ok {
		return nil, "", p.Errf("spec.functions", "missing")
	}
	var patterns []string
	switch fn.Kind {
	case yaml.ScalarNode:
		patterns = []string{fn.Value}
	case yaml.SequenceNode:
		for i, c := range fn.Content {
			s, err := p.Str(c, fmt.Sprintf("spec.functions[%d]", i))
			if err != nil {
				return nil, "", err
			}
			patterns = append(patterns, s)
		}
	default:
		return nil, "", p.Errf("spec.functions", "want a string or a list of strings, have %s", yamldoc.NodeKind(fn))
	}
	if len(patterns) == 0 {
		return nil, "", p.Errf("spec.functions", "empty")
	}
	var out []Endpoint
	for i, pat := range patterns {
		ns, typ, err := splitPattern(pat)
		if err != nil {
			return nil, "", p.Errf(fmt.Sprintf("spec.functions[%d]", i), "%v", err)
		}
		e := ep
		e.Namespace, e.Type = ns, typ
		out = append(out, e)
	}
	return out, "", nil
}

func (p *parser) transport(n *yaml.Node, ep *Endpoint) error {
	t, err := p.Mapping(n, "spec.transport")
	if err != nil {
		return err
	}
	typ := "io.statefun.transports.v1/async"
	if tn, ok := t["type"]; ok {
		if typ, err = p.Str(tn, "spec.transport.type"); err != nil {
			return err
		}
	}
	var allowed []string
	switch typ {
	case "io.statefun.transports.v1/okhttp":
		allowed = []string{"type", "timeouts"}
	case "io.statefun.transports.v1/async":
		allowed = []string{"type", "timeouts", "call", "connect", "pool_ttl", "pool_size", "payload_max_bytes"}
	default:
		return p.Errf("spec.transport.type", "unsupported transport %q (okhttp and async are supported; shardfn uses its own HTTP client for both)", typ)
	}
	for k, v := range t {
		field := join("spec.transport", k)
		if !slices.Contains(allowed, k) {
			if strings.HasPrefix(k, "trust_") || strings.HasPrefix(k, "client_") {
				return p.Errf(field, "TLS client settings are not supported")
			}
			return p.Errf(field, "unknown field for transport %s", typ)
		}
		switch k {
		case "timeouts":
			if err := p.timeouts(v, field, ep); err != nil {
				return err
			}
		case "call":
			if ep.CallTimeout, err = p.duration(v, field); err != nil {
				return err
			}
		case "connect":
			if ep.ConnectTimeout, err = p.duration(v, field); err != nil {
				return err
			}
		case "pool_ttl":
			if _, err = p.duration(v, field); err != nil {
				return err
			}
		case "pool_size":
			if ep.MaxConcurrency, err = p.positiveInt(v, field); err != nil {
				return err
			}
		case "payload_max_bytes":
			if ep.MaxResponseBytes, err = p.positiveInt(v, field); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *parser) timeouts(n *yaml.Node, field string, ep *Endpoint) error {
	t, err := p.Mapping(n, field, "call", "connect", "read", "write")
	if err != nil {
		return err
	}
	for k, v := range t {
		d, err := p.duration(v, join(field, k))
		if err != nil {
			return err
		}
		switch k {
		case "call":
			ep.CallTimeout = d
		case "connect":
			ep.ConnectTimeout = d
		case "read":
			ep.ReadTimeout = d
		case "write":
			ep.WriteTimeout = d
		}
	}
	return nil
}

// extensions parses spec.shardfn, the settings StateFun does not have.
func (p *parser) extensions(n *yaml.Node, ep *Endpoint) error {
	const f = "spec.shardfn"
	x, err := p.Mapping(n, f, "maxRetries", "giveUpAfter", "retryBackoff", "maxRetryBackoff", "maxConcurrency", "maxRequestBytes", "maxResponseBytes")
	if err != nil {
		return err
	}
	for k, v := range x {
		field := join(f, k)
		switch k {
		case "maxRetries":
			i, err := p.int(v, field)
			if err != nil {
				return err
			}
			if i == 0 {
				return p.Errf(field, "0 is no longer accepted (it used to mean no retries); omit maxRetries to retry until the endpoint answers, or set 1..1000 or giveUpAfter")
			}
			if i < 0 || i > 1000 {
				return p.Errf(field, "want 1..1000, have %d", i)
			}
			ep.MaxRetries = i
		case "giveUpAfter":
			if ep.GiveUpAfter, err = p.duration(v, field); err != nil {
				return err
			}
			if ep.GiveUpAfter <= 0 {
				return p.Errf(field, "want a positive duration such as 10min; omit it to never give up")
			}
		case "retryBackoff":
			if ep.RetryBackoff, err = p.duration(v, field); err != nil {
				return err
			}
		case "maxRetryBackoff":
			if ep.MaxRetryBackoff, err = p.duration(v, field); err != nil {
				return err
			}
		case "maxConcurrency":
			if ep.MaxConcurrency, err = p.positiveInt(v, field); err != nil {
				return err
			}
		case "maxRequestBytes":
			if ep.MaxRequestBytes, err = p.positiveInt(v, field); err != nil {
				return err
			}
			if ep.MaxRequestBytes < 1024 {
				return p.Errf(field, "%d is below 1024", ep.MaxRequestBytes)
			}
		case "maxResponseBytes":
			if ep.MaxResponseBytes, err = p.positiveInt(v, field); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *parser) int(n *yaml.Node, field string) (int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, p.Errf(field, "want an integer, have %s", yamldoc.NodeKind(n))
	}
	i, err := strconv.Atoi(n.Value)
	if err != nil {
		return 0, p.Errf(field, "want an integer, have %q", n.Value)
	}
	return i, nil
}

func (p *parser) positiveInt(n *yaml.Node, field string) (int, error) {
	i, err := p.int(n, field)
	if err == nil && i <= 0 {
		err = p.Errf(field, "want a positive integer, have %d", i)
	}
	return i, err
}

func (p *parser) duration(n *yaml.Node, field string) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, p.Errf(field, "want a duration such as 10s or 500ms, have %s", yamldoc.NodeKind(n))
	}
	d, err := ParseDuration(n.Value)
	if err != nil {
		return 0, p.Errf(field, "%v", err)
	}
	return d, nil
}

// ParseDuration parses a duration as StateFun's configuration writes it:
// a Go duration ("10s", "1m30s", "500ms"), a number with a Flink unit
// ("2min", "10 s", "100 ms", "1 h", "1d"), or a bare integer of
// milliseconds. Negative durations are an error.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if ms, err := strconv.ParseInt(t, 10, 64); err == nil {
		if ms < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9') {
		i++
	}
	if i > 0 {
		num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
		units := map[string]time.Duration{
			"ms": time.Millisecond, "milli": time.Millisecond, "millis": time.Millisecond, "millisecond": time.Millisecond, "milliseconds": time.Millisecond,
			"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
			"min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
			"h": time.Hour, "hour": time.Hour, "hours": time.Hour,
			"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
		}
		if u, ok := units[unit]; ok {
			v, err := strconv.ParseInt(num, 10, 64)
			if err != nil || v > int64(1<<62)/int64(u) {
				return 0, fmt.Errorf("duration %q out of range", s)
			}
			return time.Duration(v) * u, nil
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want e.g. 10s, 500ms, 2min", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

func splitPattern(s string) (ns, typ string, err error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("function %q: want namespace/name or namespace/*", s)
	}
	ns, typ = s[:i], s[i+1:]
	if strings.Contains(ns, "*") || (strings.Contains(typ, "*") && typ != "*") {
		return "", "", fmt.Errorf("function %q: a wildcard may only be the whole name (namespace/*)", s)
	}
	return ns, typ, nil
}

func checkURLTemplate(s string) error {
	u, err := url.Parse(strings.ReplaceAll(s, "{function.name}", "x"))
	if err != nil {
		return fmt.Errorf("bad URL %q: %v", s, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("URL %q has no host", s)
		}
	case "http+unix", "https+unix":
		if _, _, err := splitUnixPath(u.Path); err != nil {
			return err
		}
	default:
		return fmt.Errorf("URL %q: scheme must be http, https, http+unix or https+unix", s)
	}
	return nil
}

// splitUnixPath splits "/path/to.sock/url/path" into the socket file and
// the URL path, as StateFun's http+unix scheme does.
func splitUnixPath(p string) (sock, path string, err error) {
	i := strings.Index(p, ".sock")
	if i < 0 {
		return "", "", fmt.Errorf("http+unix URL path %q: the socket file must end in .sock", p)
	}
	sock, path = p[:i+len(".sock")], p[i+len(".sock"):]
	if path == "" {
		path = "/"
	}
	return sock, path, nil
}

func join(a, b string) string { return a + "." + b }
