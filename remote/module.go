package remote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	component := slices.Contains(componentKinds, kind)
	if !component && kind != KindHTTPEndpointV2 && kind != KindHTTPEndpointV1 {
		return nil, "", nil, p.Errf("kind", "unknown kind %q (supported: %s, %s, %s)", kind, KindHTTPEndpointV2, KindHTTPEndpointV1, strings.Join(componentKinds, ", "))
	}
	for k := range top {
		if k != "kind" && k != "spec" {
			return nil, "", nil, p.Errf(k, "unknown top-level field; want kind and spec")
		}
	}
	if component {
		return nil, "", &Component{Kind: kind, Spec: top["spec"], Source: p.Where}, nil
	}
	sn, ok := top["spec"]
	if !ok {
		return nil, "", nil, p.Errf("spec", "missing")
	}
	eps, warn, err := p.endpoint(sn, kind == KindHTTPEndpointV1)
	return eps, warn, nil, err
}
