package main_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// walk lists every path under dir with its type and mode.
func walk(t *testing.T, dir string) []string {
	t.Helper()
	var entries []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		entries = append(entries, fmt.Sprintf("%s %v", p, fi.Mode()))
		return nil
	}))
	return entries
}

// `config validate` checks what `run` checks and creates nothing: no
// output directory, no socket directory, no state file directory.
func TestConfigValidateCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	good := fmt.Sprintf(`workload_api:
  socket: unix://%[1]s/spire/agent.sock
admin:
  socket: %[1]s/run/admin.sock
outputs:
  - name: redis
    dir: %[1]s/out/redis
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik: {file: %[1]s/traefik/dynamic.yml}
  - name: api
    dir: %[1]s/out/api
    jwt:
      - {audience: [api], file: token.jwt}
proxies:
  - name: local
    mode: client
    listen: unix://%[1]s/sock/redis.sock
    target: 127.0.0.1:6380
    allow: [spiffe://example.org/redis]
redis:
  transition:
    admin: {addr: "unix://%[1]s/redis/redis.sock"}
    state_file: %[1]s/state/redis.json
`, dir)
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(good), 0o600))
	before := walk(t, dir)
	r := runCLI(t, "config", "validate", p)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, before, walk(t, dir), "config validate must not create anything")

	// Nor does a failing one, nor one that stops on an unknown owner.
	bad := strings.Replace(good, "    cert_file: svid.pem\n", "    owner: {group: no-such-group-x}\n    cert_file: svid.pem\n", 1)
	require.NoError(t, os.WriteFile(p, []byte(bad), 0o600))
	before = walk(t, dir)
	r = runCLI(t, "config", "validate", p)
	require.Equal(t, 2, r.code, r.stderr)
	assert.Equal(t, before, walk(t, dir))
}

// The README's promise for every class of error: one line each,
// FILE:LINE: field: problem, all at once, exit 2, the same from
// `config validate`, `run` and `fetch`.
func TestConfigErrorClassesThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		want       []string // the whole of stderr, line by line; %s is the file
	}{
		{"decode errors do not hide the others", `workload_api:
  socket: unix:///run/spire/agent.sock
outputs:
  - name: redis
    dir: out/redis
    cert_file: svid.pem
    key_file: key.pem
    key_mode: "0x"
    bogus: 1
proxies:
  - name: p
    mode: server
    listen: 0.0.0.0:6701
    target: 10.0.0.5:11434
    allow: [spiffe://example.org/traefik]
    max_conns: many
`, []string{
			`%s:5: outputs[0].dir: "out/redis" must be an absolute path`,
			`%s:8: outputs[0].key_mode: "0x" is not a file mode (use an octal string such as "0640")`,
			`%s:9: outputs[0].bogus: unknown field in an output`,
			`%s:14: proxies[0].target: "10.0.0.5:11434": plaintext target must be a loopback IP, localhost or a unix socket (set unsafe_allow_non_loopback_plaintext to override)`,
			`%s:16: proxies[0].max_conns: "many" is not a whole number`,
		}},
		{"bad indentation at its line", `workload_api:
  socket: unix:///run/spire/agent.sock
outputs:
  - name: redis
   dir: /etc/redis/tls
    cert_file: svid.pem
`, []string{`%s:5: outputs[0].dir: this line is indented more than the one above, which opens no block`}},
		{"what only building the agent found", `workload_api:
  socket: unix:///run/spire/agent.sock
outputs:
  - name: redis
    dir: /etc/redis/tls
    owner:
      group: no-such-group-x
    cert_file: svid.pem
    key_file: key.pem
  - name: again
    dir: /etc/redis/tls/
    bundle_file: ca.pem
`, []string{
			`%s:7: outputs[0].owner.group: group "no-such-group-x" does not exist on this host`,
			`%s:11: outputs[1].dir: "/etc/redis/tls/" is also the dir of outputs[0]; two outputs cannot share a directory`,
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("agent%d.yaml", i))
			require.NoError(t, os.WriteFile(p, []byte(tc.yaml), 0o600))
			var want strings.Builder
			for _, l := range tc.want {
				want.WriteString(fmt.Sprintf(l, p) + "\n")
			}
			for _, args := range [][]string{{"config", "validate", p}, {"run", "--config", p}, {"fetch", "--config", p}} {
				r := runCLI(t, args...)
				assert.Equal(t, 2, r.code, args)
				assert.Equal(t, want.String(), r.stderr, args)
			}
		})
	}
}

// A legal but probably unintended setting is one warning line; the
// config is still OK.
func TestConfigValidateWarnsOnKeyWiderThanCert(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(`workload_api: {socket: "unix:///run/spire/agent.sock"}
outputs:
  - name: redis
    dir: /etc/redis/tls
    cert_file: svid.pem
    key_file: key.pem
    cert_mode: "0600"
    key_mode: "0640"
`), 0o600))
	r := runCLI(t, "config", "validate", p)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "warning: "+p+":8: outputs[0].key_mode: 0640 is wider than cert_mode 0600: the key is readable where the certificate is not\n", r.stderr)
	assert.Equal(t, p+": OK (1 outputs, 0 proxies)\n", r.stdout)
}

// A Traefik link in a directory every user can write (/tmp-like), or in a
// directory that is a symlink, is refused at its line by `config
// validate`, `run` and `fetch` alike (the Linker refuses it again on every
// reload), and the check makes nothing there.
func TestConfigRefusesAnUnsafeTraefikLinkDir(t *testing.T) {
	dir := t.TempDir()
	open, real := filepath.Join(dir, "open"), filepath.Join(dir, "real")
	require.NoError(t, os.Mkdir(open, 0o700))
	require.NoError(t, os.Chmod(open, 0o777|os.ModeSticky))
	require.NoError(t, os.Mkdir(real, 0o755))
	require.NoError(t, os.Symlink(real, filepath.Join(dir, "sym")))
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(`workload_api:
  socket: unix:///run/spire/agent.sock
outputs:
  - name: a
    dir: %[1]s/out/a
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik: {file: %[1]s/open/dyn.yml}
  - name: b
    dir: %[1]s/out/b
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik: {file: %[1]s/sym/dyn.yml}
`, dir)), 0o600))
	want := p + ":10: outputs[0].reload[0].traefik.file: directory " + open + " is writable by every user (mode 1777): another local user could put a file or a directory at the link's name; use a directory only the agent and the consumer can write\n" +
		p + ":17: outputs[1].reload[0].traefik.file: directory " + filepath.Join(dir, "sym") + " is a symlink; configure the directory it points to\n"
	before := walk(t, dir)
	for _, args := range [][]string{{"config", "validate", p}, {"run", "--config", p}, {"fetch", "--config", p}} {
		r := runCLI(t, args...)
		assert.Equal(t, 2, r.code, args)
		assert.Equal(t, want, r.stderr, args)
	}
	assert.Equal(t, before, walk(t, dir), "nothing made by the checks")
}
