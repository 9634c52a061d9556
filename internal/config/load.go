package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
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
func Parse(path string, data []byte, getenv func(string) string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlErrors(path, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s:1: the file is empty", path)
	}
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlErrors(path, err)
	}
	cfg.Path = path
	v := &validator{path: path, root: root.Content[0]}
	cfg.applyDefaults(getenv)
	cfg.validate(v)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return cfg, nil
}

var (
	lineRE     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	notFoundRE = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
)

// yamlErrors turns yaml.v3's errors into one "FILE:LINE: ..." line each.
func yamlErrors(path string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]error, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		sub := lineRE.FindStringSubmatch(m)
		if sub == nil {
			out = append(out, fmt.Errorf("%s: %s", path, m))
			continue
		}
		line, msg := sub[1], sub[2]
		// Custom unmarshalers prefix their own line; keep one.
		if inner := lineRE.FindStringSubmatch(msg); inner != nil {
			line, msg = inner[1], inner[2]
		}
		if nf := notFoundRE.FindStringSubmatch(msg); nf != nil {
			msg = fmt.Sprintf("unknown field %q in %s", nf[1], sectionName(nf[2]))
		}
		msg = strings.ReplaceAll(msg, "config.", "")
		out = append(out, fmt.Errorf("%s:%s: %s", path, line, msg))
	}
	return errors.Join(out...)
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

// validator collects errors with the line of the field they concern.
type validator struct {
	path string
	root *yaml.Node
	errs []error
}

// errorf records an error about the field at keyPath (strings are mapping
// keys, ints are list indexes); the line is the deepest node found.
func (v *validator) errorf(keyPath []any, format string, args ...any) {
	line := v.lineOf(keyPath)
	v.errs = append(v.errs, fmt.Errorf("%s:%d: %s: %s", v.path, line, fieldName(keyPath), fmt.Sprintf(format, args...)))
}

func (v *validator) lineOf(keyPath []any) int {
	n := v.root
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

func path(elems ...any) []any { return elems }
