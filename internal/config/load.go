package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Where the admin endpoint listens when the config does not say. On
// Linux systemd's RuntimeDirectory=identity-agent creates the parent; macOS
// has no /run, and `identity-agent install` creates /var/db/identity-agent
// for the launchd job.
const (
	DefaultAdminSocket       = "/run/identity-agent/admin.sock"
	DefaultAdminSocketDarwin = "/var/db/identity-agent/admin.sock"
)

// AdminSocketFor returns the default admin socket for an operating system
// (runtime.GOOS).
func AdminSocketFor(goos string) string {
	if goos == "darwin" {
		return DefaultAdminSocketDarwin
	}
	return DefaultAdminSocket
}

// EnvEndpointSocket is the SPIFFE standard variable naming the Workload API.
const EnvEndpointSocket = "SPIFFE_ENDPOINT_SOCKET"

// Load reads, strictly decodes, defaults and validates the file at path.
// getenv supplies SPIFFE_ENDPOINT_SOCKET (pass os.Getenv); it is a
// parameter so that tests need no process environment.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, data, getenv)
}

// Parse is Load for bytes already read; path is used in error messages.
//
// Every problem is reported at once, as Problems ("FILE:LINE: field:
// problem" each). When the file could be read as YAML but has problems,
// Parse returns the config as far as it was understood together with the
// problems, so that a caller can add the checks only it can make
// (agent.Plan does) before it reports; such a config must never be used.
func Parse(path string, data []byte, getenv func(string) string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxProblem(path, data, err)
	}
	if len(root.Content) == 0 {
		return nil, Problems{{File: path, Line: 1, Field: "config", Msg: "the file is empty"}}
	}
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var decodeErrs Problems
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		decodeErrs = decodeProblems(path, root.Content[0], err)
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, decodeErrs
		}
	}
	cfg.Path, cfg.root = path, root.Content[0]
	cfg.applyDefaults(getenv)
	v := &validator{cfg: cfg}
	cfg.validate(v)
	// A field that failed to decode is zero: checks of it would only
	// repeat the problem in other words.
	bad := map[int]bool{}
	for _, p := range decodeErrs {
		bad[p.Line] = true
	}
	found := slices.Clone(decodeErrs)
	for _, p := range v.errs {
		if !bad[p.Line] {
			found = append(found, p)
		}
	}
	if err := Join(found); err != nil {
		return cfg, err
	}
	return cfg, nil
}

var (
	lineRE      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	notFoundRE  = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	unmarshalRE = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
	quotedRE    = regexp.MustCompile(`^"(?:[^"\\]|\\.)*"`)
)

// decodeProblems turns yaml.v3's decoding errors into Problems, each at
// the line and field it concerns.
func decodeProblems(path string, root *yaml.Node, err error) Problems {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make(Problems, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		sub := lineRE.FindStringSubmatch(m)
		if sub == nil {
			out = append(out, &Problem{File: path, Line: 1, Field: "config", Msg: m})
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		msg := sub[2]
		// Custom unmarshalers prefix their own line; keep one.
		if inner := lineRE.FindStringSubmatch(msg); inner != nil {
			line, _ = strconv.Atoi(inner[1])
			msg = inner[2]
		}
		var key, value string
		if nf := notFoundRE.FindStringSubmatch(msg); nf != nil {
			key = nf[1]
			msg = "unknown field in " + sectionName(nf[2])
		} else if um := unmarshalRE.FindStringSubmatch(msg); um != nil {
			value = um[2]
			msg = fmt.Sprintf("%q %s", um[2], wantType(um[3]))
		} else if q := quotedRE.FindString(msg); q != "" {
			value, _ = strconv.Unquote(q)
		}
		field := "config"
		if p, ok := pathAtLine(root, line, key, value); ok {
			field = fieldName(p)
		}
		out = append(out, &Problem{File: path, Line: line, Field: field, Msg: strings.ReplaceAll(msg, "config.", "")})
	}
	return out
}

// wantType says what a field of Go type goType takes.
func wantType(goType string) string {
	switch {
	case goType == "int":
		return "is not a whole number"
	case goType == "bool":
		return "is not true or false"
	case goType == "string":
		return "is not a single value"
	case strings.HasPrefix(goType, "[]"):
		return "is not a list (use [a, b] or one \"- item\" per line)"
	case strings.HasPrefix(goType, "config.") || strings.HasPrefix(goType, "*config."):
		return "is not a section (use key: value lines)"
	}
	return "cannot be read as " + goType
}

func sectionName(goType string) string {
	switch goType {
	case "Config":
		return "the top level"
	case "Output":
		return "an output"
	case "Proxy":
		return "a proxy"
	case "Reload":
		return "a reload entry"
	default:
		return goType
	}
}

// validator collects problems with the line of the field they concern.
type validator struct {
	cfg  *Config
	errs Problems
}

// errorf records a problem with the field at keyPath (strings are mapping
// keys, ints are list indexes); the line is the deepest node found.
func (v *validator) errorf(keyPath []any, format string, args ...any) {
	v.errs = append(v.errs, v.cfg.problem(keyPath, fmt.Sprintf(format, args...)))
}

func path(elems ...any) []any { return elems }
