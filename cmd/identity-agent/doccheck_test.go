package main_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The docs say only what exists: every `identity-agent ...` command line in
// README.md, docs/*.md and examples/**/README.md (code blocks and inline
// code) names real subcommands and real flags of the built binary, as its
// own --help lists them.

// helpInfo is what `identity-agent PATH... --help` says a command has.
type helpInfo struct {
	usage    string          // the Usage: line(s)
	subs     map[string]bool // Available Commands
	flags    map[string]bool // long and short names → takes a value
	hasFlags map[string]bool // every name, value or not
}

var (
	helpFlagLine = regexp.MustCompile(`^\s+(?:-(\w), )?--([\w-]+)(?: (\S+))?(?:\s{2,}|$)`)
	helpSubLine  = regexp.MustCompile(`^\s{2}([a-z][\w-]*)\s{2,}`)
)

type helpCache map[string]*helpInfo

func (c helpCache) get(t *testing.T, path []string) *helpInfo {
	t.Helper()
	key := strings.Join(path, " ")
	if h, ok := c[key]; ok {
		return h
	}
	r := runCLI(t, append(slices.Clone(path), "--help")...)
	require.Equal(t, 0, r.code, "identity-agent %s --help: %s", key, r.stderr)
	h := &helpInfo{subs: map[string]bool{}, flags: map[string]bool{}, hasFlags: map[string]bool{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":") {
			section = line
			continue
		}
		switch section {
		case "Usage:":
			h.usage += line + "\n"
		case "Available Commands:", "Additional Commands:":
			if m := helpSubLine.FindStringSubmatch(line); m != nil {
				h.subs[m[1]] = true
			}
		case "Flags:", "Global Flags:":
			if m := helpFlagLine.FindStringSubmatch(line); m != nil {
				takes := m[3] != ""
				h.flags["--"+m[2]], h.hasFlags["--"+m[2]] = takes, true
				if m[1] != "" {
					h.flags["-"+m[1]], h.hasFlags["-"+m[1]] = takes, true
				}
			}
		}
	}
	c[key] = h
	return h
}

// docCommand is one documented command line and where it is.
type docCommand struct {
	where string
	args  []string // after "identity-agent"
}

var (
	// Shell operators between commands of one line.
	cmdSeparator = regexp.MustCompile(`&&|\|\||;|\s\|\s|\$\(`)
	// identity-agent at a command position: a command's start, after $,
	// sudo, VAR=value, a directory or ExecStart=.
	cmdStart   = regexp.MustCompile(`^\s*(?:\$\s+)?(?:sudo(?:\s+-u\s+\S+)?\s+)?(?:[A-Z_]+=\S*\s+)*(?:ExecStart=)?(?:[\w./-]*/)?identity-agent(?:\s+(.*))?$`)
	inlineCode = regexp.MustCompile("`([^`]+)`")
)

// docCommands extracts the documented command lines of one markdown file.
func docCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []docCommand
	add := func(lineNo int, text string) {
		// A | escaped in a table cell: between alternatives (a\|b) or
		// between optional forms ([--x \| --y]), which are all checked.
		text = strings.ReplaceAll(strings.ReplaceAll(text, ` \| `, " "), `\|`, "|")
		for _, part := range cmdSeparator.Split(text, -1) {
			if m := cmdStart.FindStringSubmatch(part); m != nil {
				out = append(out, docCommand{fmt.Sprintf("%s:%d", path, lineNo), shellWords(m[1])})
			}
		}
	}
	// Inline code may wrap: prose is read a paragraph (or table row) at a time.
	var para []string
	paraLine := 0
	flush := func() {
		for _, m := range inlineCode.FindAllStringSubmatch(strings.Join(para, " "), -1) {
			if strings.HasPrefix(m[1], "identity-agent ") || strings.HasPrefix(m[1], "bin/identity-agent ") {
				add(paraLine, m[1])
			}
		}
		para = para[:0]
	}
	fenced := false
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			flush()
			fenced = !fenced
		case fenced:
			add(i+1, trimmed)
		case trimmed == "" || strings.HasPrefix(trimmed, "|"):
			flush()
			if trimmed != "" {
				paraLine, para = i+1, append(para, trimmed)
				flush()
			}
		default:
			if len(para) == 0 {
				paraLine = i + 1
			}
			para = append(para, trimmed)
		}
	}
	flush()
	return out
}

// shellWords splits a documented command's arguments up to the end of the
// command (a comment, a redirection, a pipe or another command).
func shellWords(s string) []string {
	var words []string
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "#") || strings.HasPrefix(w, ">") || strings.HasPrefix(w, "2>") ||
			w == "|" || w == "&&" || w == "||" || w == ";" || w == "\\" || w == "&" || strings.HasPrefix(w, "<") {
			break
		}
		words = append(words, strings.TrimRight(w, ");`"))
	}
	return words
}

// checkCommand walks args down the binary's command tree and returns what
// does not exist.
func checkCommand(t *testing.T, hc helpCache, args []string) []string {
	t.Helper()
	var problems []string
	path := []string{}
	h := hc.get(t, path)
	for i := 0; i < len(args); i++ {
		a := strings.Trim(args[i], "[]")
		switch {
		case a == "" || a == "..." || a == "|":
		case strings.HasPrefix(a, "-") && len(a) > 1:
			name, _, hasValue := strings.Cut(a, "=")
			takes, ok := h.flags[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("identity-agent %s has no flag %s", strings.Join(path, " "), name))
				continue
			}
			if takes && !hasValue && i+1 < len(args) {
				i++ // its value
			}
		case len(h.subs) > 0:
			// Alternatives (install|uninstall|...) each name a subcommand;
			// the walk goes on with the first.
			alts := strings.Split(a, "|")
			for _, alt := range alts {
				if !h.subs[alt] {
					problems = append(problems, fmt.Sprintf("identity-agent %s has no subcommand %q", strings.Join(path, " "), alt))
				}
			}
			if !h.subs[alts[0]] {
				return problems
			}
			path = append(path, alts[0])
			h = hc.get(t, path)
		case regexp.MustCompile(`^[a-z][a-z-]*(\|[a-z][a-z-]*)*$`).MatchString(a):
			// A bare word after a leaf command is a positional argument its
			// usage names (transition status|advance|rollback).
			for _, alt := range strings.Split(a, "|") {
				if !regexp.MustCompile(`(^|[\s|])` + regexp.QuoteMeta(alt) + `([\s|]|$)`).MatchString(h.usage) {
					problems = append(problems, fmt.Sprintf("identity-agent %s takes no argument %q (usage: %s)", strings.Join(path, " "), alt, strings.TrimSpace(h.usage)))
				}
			}
		}
	}
	return problems
}

func docFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../README.md", "../../docs/*.md", "../../examples/README.md", "../../examples/*/README.md"} {
		m, err := filepath.Glob(pattern)
		require.NoError(t, err)
		files = append(files, m...)
	}
	return files
}

func TestDocumentedCommandsExist(t *testing.T) {
	t.Parallel()
	hc := helpCache{}
	total := 0
	for _, f := range docFiles(t) {
		for _, c := range docCommands(t, f) {
			total++
			for _, p := range checkCommand(t, hc, c.args) {
				t.Errorf("%s: identity-agent %s: %s", c.where, strings.Join(c.args, " "), p)
			}
		}
	}
	t.Logf("%d documented command lines checked", total)
	assert.Greater(t, total, 40, "the extraction found the documented commands")
}

// The check itself: it finds what does not exist, and accepts what does.
func TestDocCheckCatchesWhatDoesNotExist(t *testing.T) {
	t.Parallel()
	hc := helpCache{}
	for _, bad := range []string{
		"frobnicate --config x",
		"status --admni /run/x.sock",
		"redis transition finish --config x",
		"install|uninstall|reinstall",
		"proxy server --listen 127.0.0.1:1 --no-such-flag",
	} {
		assert.NotEmpty(t, checkCommand(t, hc, strings.Fields(bad)), bad)
	}
	for _, good := range []string{
		"status --config /etc/identity-agent/config.yaml --json",
		"redis transition advance --confirm --config x",
		"install|uninstall|start|stop|restart",
		"service status",
		"config validate FILE",
		"dev [--socket P] [--trust-domain TD] [--spiffe-id ID[#hint]]... [--ttl 1m]",
		"proxy server|client --workload-api unix:///x --listen a --target b --allow c",
		"status -c x",
	} {
		assert.Empty(t, checkCommand(t, hc, strings.Fields(good)), good)
	}
	cmds := docCommands(t, writeMarkdown(t, "# x\n\n```sh\nsudo identity-agent start   # go\nsudo -u identity-agent identity-agent service status\njournalctl -u identity-agent -f\nbin/identity-agent status --config a.yaml | grep OK\n```\n\nrun `identity-agent version` or `chown identity-agent x`\n"))
	var got []string
	for _, c := range cmds {
		got = append(got, strings.Join(c.args, " "))
	}
	assert.Equal(t, []string{"start", "service status", "status --config a.yaml", "version"}, got)
}

func writeMarkdown(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.md")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	return p
}

// Every `make TARGET` in the docs' command blocks is a Makefile target.
func TestDocumentedMakeTargetsExist(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([\w-]+(?:\s+[\w-]+)*)\s*:`).FindAllStringSubmatch(string(mk), -1) {
		for _, name := range strings.Fields(m[1]) {
			targets[name] = true
		}
	}
	makeCmd := regexp.MustCompile(`(?:^|[\s;&(])make\s+((?:[a-z][\w-]*\s*)+)`)
	n := 0
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		fenced := false
		for i, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			if !fenced {
				continue
			}
			code, _, _ := strings.Cut(line, "#")
			for _, m := range makeCmd.FindAllStringSubmatch(code, -1) {
				for _, target := range strings.Fields(m[1]) {
					n++
					assert.True(t, targets[target], "%s:%d: make %s: no such Makefile target", f, i+1, target)
				}
			}
		}
	}
	assert.GreaterOrEqual(t, n, 8, "the docs' make commands were found")
}
