package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/identity-agent/identity-agent/internal/config"
)

// problemLine is the promised shape of every error line.
var problemLine = regexp.MustCompile(`^fuzz\.yaml:[1-9][0-9]*: [^ ].*: .`)

// FuzzParse: any bytes either parse or fail with one "FILE:LINE: field:
// problem" line per problem, never a panic, never a line that breaks the
// promise (no line 0, no bare yaml.v3 message).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		issueExample,
		"",
		"outputs: [\n",
		"workload_api:\n  socket: unix:///s\noutputs:\n  - name: a\n   dir: /d\n",
		"workload_api: {socket: unix:///s}\noutputs:\n  - {name: a, dir: /d, key_mode: \"4777\", cert_file: c, key_file: k}\n",
		"rotation:\n\tdebounce: 1s\n",
		"proxies:\n  - name: p\n    max_conns: many\n    allow: [spiffe://x/*]\n",
		"redis:\n  transition:\n    admin: {addr: \"rediss://h:1\"}\n    window: 10\n",
		"a: |\n  text\n b: 1\n",
		"- 1\n- 2\n",
		"&a x: *a\n",
	} {
		f.Add([]byte(s))
	}
	for _, p := range []string{"../../examples/quickstart.yaml", "../../examples/redis/agent.yaml", "../../examples/traefik/agent.yaml"} {
		if b, err := os.ReadFile(filepath.Clean(p)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("fuzz.yaml", data, noEnv)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			return
		}
		for _, l := range strings.Split(err.Error(), "\n") {
			if !problemLine.MatchString(l) {
				t.Fatalf("error line %q breaks FILE:LINE: field: problem (input %q)", l, data)
			}
		}
	})
}
