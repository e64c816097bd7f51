package remote

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadModuleFull(t *testing.T) {
	m, err := LoadModule("testdata/module/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 0 {
		t.Fatalf("warnings %q", m.Warnings)
	}
	if len(m.Components) != 1 || m.Components[0].Kind != "io.statefun.kafka.v1/ingress" || m.Components[0].Spec == nil ||
		m.Components[0].Source != "document 2 (kind io.statefun.kafka.v1/ingress)" {
		t.Fatalf("components %+v", m.Components)
	}
	want := []Endpoint{
		{Namespace: "com.example", Type: "*", URLTemplate: "http://functions:8000/statefun/{function.name}", MaxNumBatchRequests: 500,
			CallTimeout: 2 * time.Minute, ConnectTimeout: 500 * time.Millisecond, ReadTimeout: 10 * time.Second, WriteTimeout: 3 * time.Second,
			MaxRetries: 3, GiveUpAfter: 10 * time.Minute, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 2 * time.Second, MaxConcurrency: 64,
			MaxRequestBytes: 1 << 20, MaxResponseBytes: 4 << 20, Source: "document 1 (kind io.statefun.endpoints.v2/http)"},
	}
	v1 := Endpoint{Namespace: "geo", Type: "cell", URLTemplate: "http+unix:///run/geo.sock/fn/{function.name}", MaxNumBatchRequests: 1000,
		CallTimeout: 30 * time.Second, ConnectTimeout: DefaultConnectTimeout, ReadTimeout: DefaultReadTimeout, WriteTimeout: DefaultWriteTimeout,
		RetryBackoff: DefaultRetryBackoff, MaxRetryBackoff: DefaultMaxRetryBackoff, MaxConcurrency: DefaultMaxConcurrency,
		MaxRequestBytes: DefaultMaxRequestBytes, MaxResponseBytes: DefaultMaxResponseBytes, Source: "document 3 (kind io.statefun.endpoints.v1/http)"}
	v1b := v1
	v1b.Type = "driver"
	async := v1
	async.Namespace, async.Type, async.URLTemplate = "async", "fn", "https://async.example/{function.name}"
	async.CallTimeout, async.ConnectTimeout, async.MaxConcurrency, async.MaxResponseBytes = 5*time.Second, time.Second, 8, 1000000
	async.Source = "document 4 (kind io.statefun.endpoints.v2/http)"
	want = append(want, v1, v1b, async)
	if !reflect.DeepEqual(m.Endpoints, want) {
		t.Fatalf("endpoints\n got %+v\nwant %+v", m.Endpoints, want)
	}
	if got := m.Endpoints[0].URL("greeter"); got != "http://functions:8000/statefun/greeter" {
		t.Fatalf("URL %q", got)
	}
	if m.Endpoints[0].Pattern() != "com.example/*" {
		t.Fatal(m.Endpoints[0].Pattern())
	}
}

func TestLoadModuleMinimalDefaults(t *testing.T) {
	m, err := LoadModule("testdata/module/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ep := m.Endpoints[0]
	if ep.MaxRetries != 0 || ep.GiveUpAfter != 0 || ep.CallTimeout != DefaultCallTimeout || ep.MaxRequestBytes != DefaultMaxRequestBytes || ep.MaxNumBatchRequests != 1000 {
		t.Fatalf("defaults %+v", ep)
	}
	if err := ep.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseModuleErrors(t *testing.T) {
	const head = "kind: io.statefun.endpoints.v2/http\nspec:\n"
	cases := []struct{ name, yaml, want string }{
		{"empty", "", "no function endpoints"},
		{"only kinesis", "kind: io.statefun.kinesis.v1/egress\nspec: {id: a/b}\n", "no function endpoints"},
		{"kafka extra field", "kind: io.statefun.kafka.v1/egress\nspec: {id: a/b}\nextra: 1\n", "extra: unknown top-level field"},
		{"syntax", "kind: [", "document 1"},
		{"unknown kind", "kind: io.statefun.endpoints.v9/grpc\nspec: {}\n", `document 1 (kind io.statefun.endpoints.v9/grpc): kind: unknown kind`},
		{"missing kind", "spec: {}\n", "kind: missing"},
		{"legacy", "version: \"3.0\"\nmodule: {}\n", "legacy StateFun 3.0"},
		{"not a mapping", "- a\n- b\n", "want a mapping"},
		{"missing functions", head + "  urlPathTemplate: http://a/{function.name}\n", "spec.functions: missing"},
		{"missing url", head + "  functions: a/b\n", "spec.urlPathTemplate: missing"},
		{"bad pattern", head + "  functions: nons\n  urlPathTemplate: http://a/x\n", `spec.functions[0]: function "nons"`},
		{"bad wildcard", head + "  functions: a/b*\n  urlPathTemplate: http://a/x\n", "wildcard"},
		{"bad scheme", head + "  functions: a/b\n  urlPathTemplate: ftp://a/x\n", "spec.urlPathTemplate: URL"},
		{"unix no sock", head + "  functions: a/b\n  urlPathTemplate: http+unix:///run/x/fn\n", ".sock"},
		{"unknown field", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  maxBatch: 3\n", "spec.maxBatch: unknown field"},
		{"bad batch", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  maxNumBatchRequests: -1\n", "spec.maxNumBatchRequests: want a positive integer"},
		{"bad duration", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    timeouts:\n      call: soon\n", `spec.transport.timeouts.call: bad duration "soon"`},
		{"negative duration", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    timeouts:\n      read: -1s\n", "negative duration"},
		{"bad transport", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    type: my/transport\n", "unsupported transport"},
		{"tls", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    trust_cacerts: file:/x\n", "TLS client settings"},
		{"okhttp extra", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    type: io.statefun.transports.v1/okhttp\n    pool_size: 3\n", "spec.transport.pool_size: unknown field"},
		{"v1 timeouts in v2", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  timeouts: {call: 1s}\n", "spec.timeouts: unknown field"},
		{"retries", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {maxRetries: -2}\n", "spec.shardfn.maxRetries: want 1..1000"},
		{"zero retries", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {maxRetries: 0}\n", "spec.shardfn.maxRetries: 0 is no longer accepted"},
		{"give up zero", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {giveUpAfter: 0s}\n", "spec.shardfn.giveUpAfter: want a positive duration"},
		{"give up bad", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {giveUpAfter: never}\n", `spec.shardfn.giveUpAfter: bad duration "never"`},
		{"give up in transport", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  transport:\n    giveUpAfter: 1s\n", "spec.transport.giveUpAfter: unknown field"},
		{"budget", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {maxRequestBytes: 10}\n", "below 1024"},
		{"backoff order", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {retryBackoff: 2s, maxRetryBackoff: 1s}\n", "below retryBackoff"},
		{"unknown ext", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n  shardfn: {retries: 2}\n", "spec.shardfn.retries: unknown field"},
		{"duplicate", head + "  functions: a/b\n  urlPathTemplate: http://a/x\n---\n" + head + "  functions: [a/b]\n  urlPathTemplate: http://b/x\n", "document 2 (kind io.statefun.endpoints.v2/http): function a/b already declared in document 1"},
		{"extra top", head + "  functions: a/b\n  urlPathTemplate: http://a/x\nmeta: 1\n", "meta: unknown top-level field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseModule(strings.NewReader(tc.yaml))
			if err == nil || !errors.Is(err, ErrModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrModule containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadModuleMissingFile(t *testing.T) {
	if _, err := LoadModule("testdata/module/nope.yaml"); !errors.Is(err, ErrModule) {
		t.Fatalf("got %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"10s": 10 * time.Second, "500ms": 500 * time.Millisecond, "1m30s": 90 * time.Second, "2min": 2 * time.Minute,
		"10 s": 10 * time.Second, "250": 250 * time.Millisecond, "1h": time.Hour, "1d": 24 * time.Hour, "3 seconds": 3 * time.Second,
	}
	for in, want := range good {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-5", "-1s", "5 fortnights", "99999999999999999999d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q): want an error", in)
		}
	}
}
