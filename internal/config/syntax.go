package config

import (
	"strconv"
	"strings"
)

// syntaxProblem reports a file that is not YAML. yaml.v3 names the line
// where the enclosing block began, which for a mis-indented key can be
// many lines above the mistake; the indentation scan below finds the line
// itself and the key path leading to it. Without the scan a mis-indented
// "dir:" on line 5 of an output is "3: config: did not find expected '-'
// indicator" (TestIndentationErrorAtItsLine, the docs/CONFIG.md rule);
// with it, "5: outputs[0].dir: this line is indented more than the one
// above, which opens no block".
func syntaxProblem(path string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if sub := lineRE.FindStringSubmatch(msg); sub != nil {
		line, _ = strconv.Atoi(sub[1])
		msg = sub[2]
	}
	scan := scanIndentation(data)
	if scan.badLine >= line {
		// yaml.v3's own words ("did not find expected key") describe the
		// parser, not the file; the scan says what is wrong with the line.
		line, msg = scan.badLine, scan.badMsg
	}
	field := scan.fields[line]
	if field == "" {
		field = "config"
	}
	return Problems{{File: path, Line: line, Field: field, Msg: msg}}
}

// indentScan is what scanIndentation learnt: the key path of each line
// it understood, and the first line whose indentation fits no open block.
type indentScan struct {
	fields  map[int]string
	badLine int
	badMsg  string
}

type indentFrame struct {
	indent int
	seq    bool   // a block sequence ("- " items) rather than a mapping
	key    string // mapping: the current key
	items  int    // sequence: items so far
}

// scanIndentation follows the block structure of a YAML file line by line,
// well enough for configuration files: block mappings and sequences,
// "- key: value" items, comments, block scalars (| and >) and flow
// collections on one or more lines (skipped). It is only used to explain
// a syntax error yaml.v3 has already found.
func scanIndentation(data []byte) indentScan {
	res := indentScan{fields: map[int]string{}}
	var (
		st          []indentFrame
		opened      bool // the previous line ended in "key:" with no value
		openedAt    int  // indent of that key
		scalarAbove = -1 // inside a block scalar of a key at this indent
		flowDepth   int
	)
	path := func(extra string) string {
		var b strings.Builder
		add := func(k string) {
			if k == "" {
				return
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(k)
		}
		for i, f := range st {
			switch {
			case f.seq:
				b.WriteString("[" + strconv.Itoa(max(f.items-1, 0)) + "]")
			case i == len(st)-1 && extra != "":
				add(extra)
				extra = ""
			default:
				add(f.key)
			}
		}
		add(extra)
		return b.String()
	}
	bad := func(n int, content, msg string) indentScan {
		key, _, _ := splitKey(strings.TrimLeft(strings.TrimPrefix(content, "-"), " "))
		res.fields[n] = path(key)
		res.badLine, res.badMsg = n, msg
		return res
	}
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		text := strings.TrimRight(raw, " \r")
		content := strings.TrimLeft(text, " ")
		indent := len(text) - len(content)
		if content == "" || strings.HasPrefix(content, "#") {
			continue
		}
		if scalarAbove >= 0 {
			if indent > scalarAbove {
				continue
			}
			scalarAbove = -1
		}
		if flowDepth > 0 {
			flowDepth += flowBalance(content)
			continue
		}
		if strings.HasPrefix(content, "\t") {
			return bad(n, content, "a tab is not indentation in YAML; use spaces")
		}
		if n == 1 && (content == "---" || strings.HasPrefix(content, "%")) {
			continue
		}
		isSeq := content == "-" || strings.HasPrefix(content, "- ")
		for len(st) > 0 && st[len(st)-1].indent > indent {
			st = st[:len(st)-1]
		}
		switch top := len(st) - 1; {
		case opened && (top < 0 || indent > openedAt || (indent == openedAt && isSeq)):
			st = append(st, indentFrame{indent: indent, seq: isSeq})
		case top < 0:
			st = append(st, indentFrame{indent: indent, seq: isSeq})
		case indent > st[top].indent:
			return bad(n, content, "this line is indented more than the one above, which opens no block")
		case st[top].seq != isSeq:
			// A sequence may sit at its key's own indent ("key:\n- a");
			// leaving it returns to that mapping.
			if st[top].seq && top > 0 && st[top-1].indent == indent && !st[top-1].seq {
				st = st[:top]
				break
			}
			if isSeq {
				return bad(n, content, "a list item where the block above holds keys; check the indentation")
			}
			return bad(n, content, "a key where the block above holds list items; check the indentation (keys of an item line up under its first key)")
		}
		f := &st[len(st)-1]
		rest := content
		if isSeq {
			f.items++
			rest = strings.TrimLeft(strings.TrimPrefix(content, "-"), " ")
			if rest == "" {
				res.fields[n] = path("")
				opened, openedAt = true, indent
				continue
			}
			// "- key: value" opens a mapping at the key's column.
			st = append(st, indentFrame{indent: indent + (len(content) - len(rest))})
			f = &st[len(st)-1]
		}
		key, value, isKey := splitKey(rest)
		opened = false
		if !isKey {
			res.fields[n] = path("")
			flowDepth = flowBalance(rest)
			continue
		}
		f.key = key
		res.fields[n] = path(key)
		switch v := stripComment(value); {
		case v == "":
			opened, openedAt = true, f.indent
		case strings.HasPrefix(v, "|") || strings.HasPrefix(v, ">"):
			scalarAbove = f.indent
		default:
			flowDepth = flowBalance(v)
		}
	}
	return res
}

// splitKey reads "key: value" (or "key:"); quoted keys are taken as they are.
func splitKey(s string) (key, value string, ok bool) {
	if strings.HasPrefix(s, "[") || strings.HasPrefix(s, "{") || strings.HasPrefix(s, "\"") || strings.HasPrefix(s, "'") {
		return "", "", false
	}
	if k, v, found := strings.Cut(s, ": "); found {
		return strings.TrimSpace(k), strings.TrimSpace(v), true
	}
	if k, found := strings.CutSuffix(stripComment(s), ":"); found {
		return strings.TrimSpace(k), "", true
	}
	return "", "", false
}

func stripComment(s string) string {
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	if strings.HasPrefix(s, "#") {
		return ""
	}
	return strings.TrimSpace(s)
}

// flowBalance is how many flow collections ([ or {) s leaves open, outside
// quotes.
func flowBalance(s string) int {
	depth, quote, prev := 0, rune(0), rune(0)
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '[' || r == '{':
			depth++
		case r == ']' || r == '}':
			depth--
		case r == '#' && prev == ' ':
			return max(depth, 0)
		}
		prev = r
	}
	return max(depth, 0)
}
