package layering_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/identity-agent/identity-agent"

type goPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
}

// TestPkgExportsNoInternalType: an exported declaration of a pkg/ package
// (a function's parameters and results, a method of an exported type, an
// exported type, field, variable or constant) never names a type from
// internal/, which users could not name or errors.As on.
func TestPkgExportsNoInternalType(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/pkg/...").Output()
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p goPackage
		require.NoError(t, dec.Decode(&p))
		internal := false
		for _, imp := range p.Imports {
			internal = internal || strings.HasPrefix(imp, module+"/internal/")
		}
		if !internal {
			continue
		}
		for _, f := range p.GoFiles {
			for _, bad := range exportedInternalUses(t, filepath.Join(p.Dir, f)) {
				t.Errorf("%s: %s", p.ImportPath, bad)
			}
			checked++
		}
	}
	require.NotZero(t, checked, "no pkg/ package imports internal/: the check checked nothing")
}

// exportedInternalUses lists "file:line: Name uses pkg.Type" for each
// exported declaration in file that names a type of an internal import.
func exportedInternalUses(t *testing.T, file string) []string {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	names := map[string]bool{} // local names of internal imports
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if !strings.HasPrefix(path, module+"/internal/") {
			continue
		}
		name := filepath.Base(path)
		if imp.Name != nil {
			name = imp.Name.Name
		}
		names[name] = true
	}
	if len(names) == 0 {
		return nil
	}
	var bad []string
	check := func(owner string, n ast.Node) {
		if n == nil || (owner != "" && !ast.IsExported(owner)) {
			return
		}
		ast.Inspect(n, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && names[id.Name] {
					bad = append(bad, fset.Position(sel.Pos()).String()+": "+owner+" uses "+id.Name+"."+sel.Sel.Name)
				}
			}
			// Function bodies and unexported fields are implementation.
			switch n := n.(type) {
			case *ast.BlockStmt:
				return false
			case *ast.Field:
				if len(n.Names) > 0 && !ast.IsExported(n.Names[0].Name) {
					return false
				}
			}
			return true
		})
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv != nil && !exportedRecv(d.Recv) {
				continue
			}
			check(d.Name.Name, d.Type)
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					check(s.Name.Name, s.Type)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						check(n.Name, s.Type)
						if s.Type == nil && ast.IsExported(n.Name) {
							for _, v := range s.Values {
								check(n.Name, v)
							}
						}
					}
				}
			}
		}
	}
	return bad
}

func exportedRecv(r *ast.FieldList) bool {
	t := r.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	id, ok := t.(*ast.Ident)
	return ok && ast.IsExported(id.Name)
}
