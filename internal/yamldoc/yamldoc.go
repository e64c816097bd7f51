// Package yamldoc reads the YAML nodes of a module document (StateFun's
// module.yaml) with errors that name the document and the field at fault,
// for the packages that parse its kinds (remote's function endpoints,
// kafka's ingresses and egresses).
package yamldoc

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parser reads the nodes of one document. Its errors wrap Err and say
// where: "<Err>: <Where>: <field>: <what>".
type Parser struct {
	// Where names the document, e.g. "document 2".
	Where string
	// Err is the error every error of the Parser wraps (the caller
	// package's sentinel).
	Err error
}

// Errf returns an error about field.
func (p *Parser) Errf(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %s", p.Err, p.Where, field, fmt.Sprintf(format, args...))
}

// Mapping returns the entries of the mapping node n, the field named
// field. When allowed is not empty, a key outside it is an error that
// lists the known keys; a key given twice is an error.
func (p *Parser) Mapping(n *yaml.Node, field string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.Errf(field, "want a mapping, have %s", NodeKind(n))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if allowed != nil && !slices.Contains(allowed, k) {
			known := slices.Sorted(slices.Values(allowed))
			return nil, p.Errf(field+"."+k, "unknown field (line %d); known: %s", n.Content[i].Line, strings.Join(known, ", "))
		}
		if _, dup := out[k]; dup {
			return nil, p.Errf(field+"."+k, "duplicate field (line %d)", n.Content[i].Line)
		}
		out[k] = n.Content[i+1]
	}
	return out, nil
}

// Str reads a string that is not empty or blank.
func (p *Parser) Str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.Errf(field, "want a string, have %s", NodeKind(n))
	}
	if strings.TrimSpace(n.Value) == "" {
		return "", p.Errf(field, "empty")
	}
	return n.Value, nil
}

// NodeKind describes n for an error: "a mapping", "a list", "null", the
// quoted scalar, "an alias" or "nothing".
func NodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}
