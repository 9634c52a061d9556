package rotation

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// Equal compares settings, not identity or state: two outputs built
// apart from one config are Equal; any changed setting is not.
func TestOutputEqual(t *testing.T) {
	mk := func() Output {
		return Output{
			Name: "web", Dir: "/d", Selector: svid.Selector{Hint: "h"},
			Formats: []Format{
				&PEM{CertFile: "c.pem", KeyFile: "k.pem"},
				&Combined{File: "all.pem"},
				&FSDelivery{},
				&BundleDir{Dir: "b"},
				&PKCS12{KeystoreFile: "k.p12", PasswordFile: "/pw"},
				&JWT{Tokens: []JWTFile{{Audience: []string{"db"}, File: "t"}}, BundleFile: "jwks.json"},
			},
			Reloads: []Reloader{
				NewSignalReloader("/run/x.pid", 0, syscall.SIGHUP),
				NewExecReloader([]string{"true", "x"}, time.Second),
				NewSystemdReloader("nginx", "reload"),
			},
		}
	}
	a := mk()
	assert.True(t, a.Equal(mk()), "built apart from the same settings")
	// State does not count: a built PKCS#12 cache.
	a.Formats[4].(*PKCS12).cache = map[string]p12Entry{"k.p12": {fingerprint: "x"}}
	assert.True(t, a.Equal(mk()))
	// The zero Owner is "leave as is".
	b := mk()
	b.Owner = atomicdir.Owner{UID: -1, GID: -1}
	assert.True(t, mk().Equal(b))

	for name, change := range map[string]func(*Output){
		"name":         func(o *Output) { o.Name = "api" },
		"selector":     func(o *Output) { o.Selector.Hint = "other" },
		"federated":    func(o *Output) { o.IncludeFederated = true },
		"owner":        func(o *Output) { o.Owner = atomicdir.Owner{UID: 5, GID: -1} },
		"key mode":     func(o *Output) { o.Formats[0].(*PEM).KeyMode = 0o640 },
		"order":        func(o *Output) { o.Formats[1].(*Combined).Order = svid.ChainFirst },
		"fs mode":      func(o *Output) { o.Formats[2].(*FSDelivery).BundleMode = 0o640 },
		"bundle dir":   func(o *Output) { o.Formats[3].(*BundleDir).Dir = "c" },
		"password":     func(o *Output) { o.Formats[4].(*PKCS12).PasswordFile = "/pw2" },
		"audience":     func(o *Output) { o.Formats[5].(*JWT).Tokens[0].Audience = []string{"db", "x"} },
		"format gone":  func(o *Output) { o.Formats = o.Formats[:5] },
		"format order": func(o *Output) { o.Formats[0], o.Formats[1] = o.Formats[1], o.Formats[0] },
		"signal":       func(o *Output) { o.Reloads[0] = NewSignalReloader("/run/x.pid", 0, syscall.SIGUSR1) },
		"exec argv":    func(o *Output) { o.Reloads[1] = NewExecReloader([]string{"true", "y"}, time.Second) },
		"systemd":      func(o *Output) { o.Reloads[2] = NewSystemdReloader("nginx", "restart") },
		"verify":       func(o *Output) { o.Verify = fakeChecker{} },
		"timeout":      func(o *Output) { o.VerifyTimeout = time.Minute },
	} {
		b := mk()
		change(&b)
		assert.False(t, mk().Equal(b), name)
		assert.False(t, b.Equal(mk()), name)
	}
}

// A Format value keeps state (PKCS#12 encodings): two outputs of one
// Manager sharing one would use it from two goroutines, so it is refused.
func TestFormatSharedByTwoOutputsRefused(t *testing.T) {
	dir := t.TempDir()
	pem := &PEM{CertFile: "c.pem"}
	_, err := NewManager(&fakeSource{}, []Output{
		{Name: "a", Dir: dir + "/a", Formats: []Format{pem}},
		{Name: "b", Dir: dir + "/b", Formats: []Format{pem}},
	})
	assert.ErrorContains(t, err, `output "b": format pem is also used by output "a"`)
}
