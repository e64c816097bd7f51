package yamldoc

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var errTest = errors.New("test: bad document")

func node(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	return n.Content[0]
}

func TestMapping(t *testing.T) {
	p := &Parser{Where: "document 2", Err: errTest}
	allowed := []string{"b", "a"}
	m, err := p.Mapping(node(t, "a: 1\nb: x\n"), "spec", allowed...)
	if err != nil || len(m) != 2 || m["b"].Value != "x" {
		t.Fatalf("Mapping = %v, %v", m, err)
	}
	_, err = p.Mapping(node(t, "a: 1\nc: 2\n"), "spec", allowed...)
	if !errors.Is(err, errTest) || err.Error() != "test: bad document: document 2: spec.c: unknown field (line 2); known: a, b" {
		t.Errorf("unknown field: %v", err)
	}
	if allowed[0] != "b" {
		t.Errorf("Mapping sorted the caller's allowed list: %v", allowed)
	}
	if _, err := p.Mapping(node(t, "a: 1\na: 2\n"), "spec"); err == nil || !strings.Contains(err.Error(), "spec.a: duplicate field (line 2)") {
		t.Errorf("duplicate field: %v", err)
	}
	if _, err := p.Mapping(node(t, "- a\n"), "spec"); err == nil || !strings.Contains(err.Error(), "spec: want a mapping, have a list") {
		t.Errorf("a list: %v", err)
	}
}

func TestStr(t *testing.T) {
	p := &Parser{Where: "d", Err: errTest}
	m, _ := p.Mapping(node(t, "s: hi\ne: ' '\nn: null\nl: [1]\n"), "spec")
	if s, err := p.Str(m["s"], "spec.s"); s != "hi" || err != nil {
		t.Errorf("Str = %q, %v", s, err)
	}
	for k, want := range map[string]string{"e": "spec.e: empty", "n": "spec.n: want a string, have null", "l": "spec.l: want a string, have a list"} {
		if _, err := p.Str(m[k], "spec."+k); err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("Str(%s): %v, want ...%s", k, err, want)
		}
	}
}
