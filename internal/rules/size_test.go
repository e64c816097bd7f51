package rules

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// Size limits of issue 11: a file does one job, a function reads as named
// steps.
const (
	maxFileLines = 600
	maxFuncLines = 100
)

// sizeExempt are folders whose split is still under way (none now);
// delete an entry once its folder holds the limits.
var sizeExempt = []string{}

// TestSizeLimits: no Go file (generated protobuf code aside, tests
// included) is over maxFileLines lines, and no function or function literal
// is over maxFuncLines.
func TestSizeLimits(t *testing.T) {
	fset := token.NewFileSet()
	for _, f := range repoFiles(t) {
		if strings.HasSuffix(f, ".pb.go") || exempt(f) {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join("../..", f), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := fset.Position(file.End()).Line; n > maxFileLines {
			t.Errorf("%s has %d lines, over %d: split it along its seams", f, n, maxFileLines)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			var name string
			switch d := n.(type) {
			case *ast.FuncDecl:
				name = d.Name.Name
			case *ast.FuncLit:
				name = "a function literal"
			default:
				return true
			}
			from, to := fset.Position(n.Pos()).Line, fset.Position(n.End()).Line
			if to-from+1 > maxFuncLines {
				t.Errorf("%s:%d: %s has %d lines, over %d: make it read as named steps", f, from, name, to-from+1, maxFuncLines)
			}
			return true
		})
	}
}

func exempt(f string) bool {
	for _, d := range sizeExempt {
		if strings.HasPrefix(f, d) {
			return true
		}
	}
	return false
}
