package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one finding about a configuration file, printed as one line:
// "FILE:LINE: field: problem".
type Problem struct {
	File  string
	Line  int
	Field string // "outputs[0].dir"; "config" for the file as a whole
	Msg   string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, oneLine(p.Field), oneLine(p.Msg))
}

// oneLine keeps a problem on its line whatever the file's values hold.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

// Problems is every finding, in file order, one line each.
type Problems []*Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is look at each Problem.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// Join flattens errs (Problems, *Problem, errors.Join of them) into one
// Problems sorted by line, each finding once; nil when there is none.
// Other errors are kept as they are, after the problems.
func Join(errs ...error) error {
	var (
		ps    Problems
		other []error
	)
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case Problems:
			ps = append(ps, e...)
		case *Problem:
			ps = append(ps, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			other = append(other, err)
		}
	}
	for _, err := range errs {
		walk(err)
	}
	slices.SortStableFunc(ps, func(a, b *Problem) int { return a.Line - b.Line })
	ps = slices.CompactFunc(ps, func(a, b *Problem) bool { return *a == *b })
	switch {
	case len(ps) == 0 && len(other) == 0:
		return nil
	case len(other) == 0:
		return ps
	}
	return errors.Join(append([]error{ps}, other...)...)
}

// fieldNamer is an error about one key, relative to the value that was
// validated: pkg/fielderr.Error (every pkg/ Validate) and the agent's own
// host checks.
type fieldNamer interface {
	error
	FieldName() string
}

// At turns err, found in the value at field (a path such as "outputs[1]"
// or "proxies[0].listen"; "" for the whole file), into Problems with the
// file's line numbers. err may join several errors; those with a
// FieldName (pkg/fielderr.Error) point below field.
func (c *Config) At(field string, err error) error {
	var ps Problems
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if p, ok := err.(*Problem); ok {
			ps = append(ps, p)
			return
		}
		f, msg := field, err.Error()
		var fe fieldNamer
		if errors.As(err, &fe) {
			f = joinField(field, fe.FieldName())
			if u := errors.Unwrap(fe); u != nil {
				msg = u.Error()
			}
		}
		ps = append(ps, c.problem(parseField(f), msg))
	}
	walk(err)
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// Problemf is one Problem about field (see At).
func (c *Config) Problemf(field, format string, args ...any) *Problem {
	return c.problem(parseField(field), fmt.Sprintf(format, args...))
}

func (c *Config) problem(keyPath []any, msg string) *Problem {
	line := 1
	if c.root != nil {
		line = lineOf(c.root, keyPath)
	}
	return &Problem{File: c.Path, Line: line, Field: fieldName(keyPath), Msg: msg}
}

func joinField(base, sub string) string {
	switch {
	case base == "":
		return sub
	case sub == "":
		return base
	case strings.HasPrefix(sub, "["):
		return base + sub
	}
	return base + "." + sub
}

var fieldPartRE = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

// parseField reads "outputs[1].jwt[0].file" into the key path
// {"outputs", 1, "jwt", 0, "file"}.
func parseField(f string) []any {
	var p []any
	for _, m := range fieldPartRE.FindAllStringSubmatch(f, -1) {
		if m[2] != "" {
			n, _ := strconv.Atoi(m[2])
			p = append(p, n)
			continue
		}
		p = append(p, m[1])
	}
	return p
}

// lineOf is the line of the deepest node of keyPath (strings are mapping
// keys, ints list indexes) that the file has.
func lineOf(n *yaml.Node, keyPath []any) int {
	line := n.Line
	for _, k := range keyPath {
		switch key := k.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || key >= len(n.Content) {
				return line
			}
			n = n.Content[key]
			line = n.Line
		}
	}
	return line
}

func fieldName(keyPath []any) string {
	var b strings.Builder
	for _, k := range keyPath {
		switch key := k.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(key)
		case int:
			b.WriteString("[" + strconv.Itoa(key) + "]")
		}
	}
	if b.Len() == 0 {
		return "config"
	}
	return b.String()
}

// pathAtLine finds the field a decoding error at line is about: the key
// named key on that line, else the value equal to value on it, else the
// first key on that line or whose value starts on it.
func pathAtLine(root *yaml.Node, line int, key, value string) ([]any, bool) {
	if key != "" || value != "" {
		if p, ok := findAtLine(root, line, key, value); ok {
			return p, true
		}
	}
	return findAtLine(root, line, "", "")
}

func findAtLine(root *yaml.Node, line int, key, value string) ([]any, bool) {
	anyNode := key == "" && value == ""
	var walk func(n *yaml.Node, p []any) ([]any, bool)
	walk = func(n *yaml.Node, p []any) ([]any, bool) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if r, ok := walk(c, p); ok {
					return r, true
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				kp := append(slices.Clone(p), k.Value)
				if k.Line == line && (anyNode || (key != "" && k.Value == key)) {
					return kp, true
				}
				if v.Line == line && v.Kind == yaml.ScalarNode && (anyNode || (value != "" && v.Value == value)) {
					return kp, true
				}
				if r, ok := walk(v, kp); ok {
					return r, true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				ip := append(slices.Clone(p), i)
				if c.Line == line && c.Kind == yaml.ScalarNode && (anyNode || (value != "" && c.Value == value)) {
					return ip, true
				}
				if r, ok := walk(c, ip); ok {
					return r, true
				}
			}
		}
		return nil, false
	}
	return walk(root, nil)
}
