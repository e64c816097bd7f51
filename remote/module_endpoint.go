package remote

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shardfn/shardfn/internal/yamldoc"
	"gopkg.in/yaml.v3"
)

// endpoint parses the spec of an HTTP endpoint document (v1 has its
// timeouts under spec) into one Endpoint per function pattern.
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
	patterns, err := p.patterns(fn)
	if err != nil {
		return nil, "", err
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

// patterns reads spec.functions: one function pattern or a list of them.
func (p *parser) patterns(fn *yaml.Node) ([]string, error) {
	var patterns []string
	switch fn.Kind {
	case yaml.ScalarNode:
		patterns = []string{fn.Value}
	case yaml.SequenceNode:
		for i, c := range fn.Content {
			s, err := p.Str(c, fmt.Sprintf("spec.functions[%d]", i))
			if err != nil {
				return nil, err
			}
			patterns = append(patterns, s)
		}
	default:
		return nil, p.Errf("spec.functions", "want a string or a list of strings, have %s", yamldoc.NodeKind(fn))
	}
	if len(patterns) == 0 {
		return nil, p.Errf("spec.functions", "empty")
	}
	return patterns, nil
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
