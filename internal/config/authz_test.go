package config

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// demoPolicyKeys is a throwaway authorizer kind, registered only in this
// test's table: what a new kind's file holds. policy_file names a file of
// allowed SPIFFE IDs, one a line.
type demoPolicyKeys struct {
	PolicyFile string `yaml:"policy_file"`
	// Comment is the line-comment prefix in the file; default "#".
	Comment string `yaml:"policy_comment"`
}

func (*demoPolicyKeys) key() string   { return "policy_file" }
func (k *demoPolicyKeys) isSet() bool { return k.PolicyFile != "" || k.Comment != "" }
func (k *demoPolicyKeys) defaults() {
	if k.Comment == "" {
		k.Comment = "#"
	}
}

func (k *demoPolicyKeys) check(v *validator, p func(...any) []any) {
	checkAbs(v, p("policy_file"), k.PolicyFile)
}

func (k *demoPolicyKeys) authorizer() (mtls.Authorizer, error) {
	b, err := os.ReadFile(k.PolicyFile)
	if err != nil {
		return nil, &fielderr.Error{Field: "policy_file", Err: err}
	}
	pol := &demoPolicy{path: k.PolicyFile, content: b, ids: map[string]bool{}}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, k.Comment) {
			pol.ids[l] = true
		}
	}
	return pol, nil
}

type demoPolicy struct {
	path    string
	content []byte
	ids     map[string]bool
}

func (p *demoPolicy) Authorize(id spiffeid.ID, _ [][]*x509.Certificate) error {
	if !p.ids[id.String()] {
		return errors.New("not in " + p.path)
	}
	return nil
}
func (p *demoPolicy) String() string  { return "ids in " + p.path }
func (p *demoPolicy) Content() []byte { return p.content }

// demoProxy is a proxy whose table has the demo kind beside the real ones.
type demoProxy struct {
	Proxy          `yaml:",inline"`
	demoPolicyKeys `yaml:",inline"`
}

func (d *demoProxy) kinds() []authzKeys { return append(d.Proxy.kinds(), &d.demoPolicyKeys) }

// parseDemo decodes doc (a "proxies:" list) strictly as the file is, and
// runs the demo table's defaults and checks, with the file's lines.
func parseDemo(t *testing.T, doc string) ([]demoProxy, Problems, error) {
	t.Helper()
	var root yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(doc), &root))
	var f struct {
		Proxies []demoProxy `yaml:"proxies"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	err := dec.Decode(&f)
	v := &validator{cfg: &Config{Path: "a.yaml", root: root.Content[0]}}
	for i := range f.Proxies {
		defaultAuthz(f.Proxies[i].kinds())
		checkAuthz(v, func(e ...any) []any { return append([]any{"proxies", i}, e...) }, f.Proxies[i].kinds())
	}
	return f.Proxies, v.errs, err
}

// TestAuthorizerKindIsOneTableEntry: a kind added to the table is decoded
// (strictly), defaulted, checked at its lines, refused beside another
// kind and built, with nothing but its own type and its table line; a
// file-backed kind builds an mtls.Policy whose fingerprint (the Plan's
// policy hash) follows the file's content.
func TestAuthorizerKindIsOneTableEntry(t *testing.T) {
	assert.Equal(t, []string{"allow"}, AuthorizerKinds())

	ps, probs, err := parseDemo(t, "proxies:\n  - name: p\n    policy_file: relative.txt\n")
	require.NoError(t, err)
	require.Equal(t, "#", ps[0].Comment, "the kind's default")
	require.EqualError(t, probs, `a.yaml:3: proxies[0].policy_file: "relative.txt" must be an absolute path`)

	_, _, err = parseDemo(t, "proxies:\n  - name: p\n    policy_flie: /x\n")
	require.EqualError(t, err, "yaml: unmarshal errors:\n  line 3: field policy_flie not found in type config.demoProxy")

	_, probs, err = parseDemo(t, "proxies:\n  - name: p\n    allow: [spiffe://example.org/a]\n    policy_file: /etc/ids\n")
	require.NoError(t, err)
	require.EqualError(t, probs, "a.yaml:4: proxies[0].policy_file: sets allow and policy_file: one authorizer per proxy")
	ps, _, _ = parseDemo(t, "proxies:\n  - name: p\n    allow: [spiffe://example.org/a]\n    policy_file: /etc/ids\n")
	_, err = buildAuthz(ps[0].kinds())
	require.EqualError(t, err, "policy_file: sets allow and policy_file: one authorizer per proxy", "two kinds build nothing")

	// The file's check builds the kind: what only building finds is at its line too.
	_, probs, err = parseDemo(t, "proxies:\n  - name: p\n    policy_file: /nonexistent/ids\n")
	require.NoError(t, err)
	require.EqualError(t, probs, "a.yaml:3: proxies[0].policy_file: open /nonexistent/ids: no such file or directory")

	dir := t.TempDir()
	file := filepath.Join(dir, "ids")
	require.NoError(t, os.WriteFile(file, []byte("# who\nspiffe://example.org/web\n"), 0o600))
	ps, probs, err = parseDemo(t, "proxies:\n  - name: p\n    policy_file: "+file+"\n")
	require.NoError(t, err)
	require.Nil(t, probs)
	require.Equal(t, "policy_file", authzKindOf(ps[0].kinds()))
	az, err := buildAuthz(ps[0].kinds())
	require.NoError(t, err)
	require.Implements(t, (*mtls.Policy)(nil), az)
	require.NoError(t, az.Authorize(spiffeid.RequireFromString("spiffe://example.org/web"), nil))
	require.Error(t, az.Authorize(spiffeid.RequireFromString("spiffe://example.org/db"), nil))
	before := tlsproxy.Config{Name: "p", Authorizer: az}

	// The same file read again is the same policy; an edit is a change,
	// though the kind's keys (and its String) did not change.
	az2, err := buildAuthz(ps[0].kinds())
	require.NoError(t, err)
	require.True(t, before.Equal(tlsproxy.Config{Name: "p", Authorizer: az2}))
	require.NoError(t, os.WriteFile(file, []byte("# who\nspiffe://example.org/web\nspiffe://example.org/db\n"), 0o600))
	az3, err := buildAuthz(ps[0].kinds())
	require.NoError(t, err)
	require.Equal(t, az.String(), az3.String())
	require.NotEqual(t, mtls.Fingerprint(az), mtls.Fingerprint(az3))
	require.False(t, before.Equal(tlsproxy.Config{Name: "p", Authorizer: az3}))
	require.NotEqual(t, before.PolicyFingerprint(), tlsproxy.Config{Name: "p", Authorizer: az3}.PolicyFingerprint())

	// A build error names the kind's key below the proxy.
	require.NoError(t, os.Remove(file))
	_, err = buildAuthz(ps[0].kinds())
	var fe *fielderr.Error
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "policy_file", fe.Field)
}

func authzKindOf(kinds []authzKeys) string {
	return strings.Join(authzKeyNames(setKinds(kinds)), "+")
}

// TestAllowIsTheAllowKind: existing `allow:` lists decode into the allow
// kind unchanged and build the AllowList tlsproxy's Allow sugar builds
// (same fingerprint: a file moved from one to the other is no change).
func TestAllowIsTheAllowKind(t *testing.T) {
	doc := "workload_api: {socket: unix:///s}\nproxies:\n" +
		"  - {name: a, mode: server, listen: 127.0.0.1:1, target: 127.0.0.1:2, allow: [spiffe://example.org/web, \" spiffe://example.org/ns/* \"]}\n" +
		"  - {name: b, mode: server, listen: 127.0.0.1:3, target: 127.0.0.1:4}\n"
	cfg, err := Parse("a.yaml", []byte(doc), nil)
	require.NoError(t, err)
	a := cfg.Proxies[0]
	require.Equal(t, []string{"spiffe://example.org/web", " spiffe://example.org/ns/* "}, a.Allow)
	require.Equal(t, "allow", a.AuthorizerKind())
	az, err := a.Authorizer()
	require.NoError(t, err)
	require.IsType(t, &mtls.AllowList{}, az)
	require.Equal(t, "allow spiffe://example.org/web, spiffe://example.org/ns/*", az.String())
	require.Equal(t, tlsproxy.Config{Allow: a.Allow}.PolicyFingerprint(), mtls.Fingerprint(az))

	b := cfg.Proxies[1]
	require.Equal(t, "", b.AuthorizerKind())
	az, err = b.Authorizer()
	require.NoError(t, err)
	require.Nil(t, az, "no kind: tlsproxy's Validate refuses it")

	bad := AllowKeys{Allow: []string{"spiffe://example.org/a", "spiffe://example.org/*/x"}}
	_, err = bad.authorizer()
	require.EqualError(t, err, `allow[1]: "spiffe://example.org/*/x": "*" is only allowed as a final "/*" path segment`,
		"tlsproxy's Validate's words for the entry")
}
