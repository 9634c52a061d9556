package rotation_test

import (
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// TestOutputEqual: two outputs built alike (fresh reloaders and checker
// included) are Equal; a change of any one field is seen. The list must
// name every field: a field added to Output without a line in Equal fails
// the count.
func TestOutputEqual(t *testing.T) {
	build := func() rotation.Output {
		probe, err := tlsprobe.New("tcp://127.0.0.1:6380", tlsprobe.WithServerName("redis"))
		require.NoError(t, err)
		return rotation.Output{Name: "o", Selector: svid.Selector{Hint: "h"}, Dir: "/srv/o", CertFile: "c", KeyFile: "k", BundleFile: "b",
			CertMode: 0o644, KeyMode: 0o600, BundleMode: 0o644, Owner: atomicdir.Owner{UID: 1, GID: 2},
			JWT:           []rotation.JWTFile{{Audience: []string{"a"}, File: "t", Mode: 0o600}},
			JWTBundleFile: "jb", JWTBundleMode: 0o644,
			Reloads: []rotation.Reloader{rotation.NewExecReloader([]string{"true"}, time.Second),
				rotation.NewSignalReloader("/run/x.pid", 0, syscall.SIGHUP),
				rotation.NewSystemdReloader("x.service", "reload"), rotation.NewLaunchdReloader("x", true)},
			CombinedFile: "all.pem", Layout: "", BundleDir: "bundles", PKCS12: rotation.PKCS12{KeystoreFile: "ks"},
			Verify: probe, VerifyTimeout: time.Second}
	}
	require.True(t, build().Equal(build()))
	changes := map[string]func(*rotation.Output){
		"Name":                   func(o *rotation.Output) { o.Name = "p" },
		"Selector":               func(o *rotation.Output) { o.Selector.Hint = "i" },
		"Dir":                    func(o *rotation.Output) { o.Dir = "/srv/p" },
		"CertFile":               func(o *rotation.Output) { o.CertFile = "x" },
		"KeyFile":                func(o *rotation.Output) { o.KeyFile = "x" },
		"BundleFile":             func(o *rotation.Output) { o.BundleFile = "x" },
		"IncludeFederated":       func(o *rotation.Output) { o.IncludeFederated = true },
		"IntermediatesInBundle":  func(o *rotation.Output) { o.IntermediatesInBundle = true },
		"CertMode":               func(o *rotation.Output) { o.CertMode = 0o640 },
		"KeyMode":                func(o *rotation.Output) { o.KeyMode = 0o640 },
		"BundleMode":             func(o *rotation.Output) { o.BundleMode = 0o640 },
		"Owner":                  func(o *rotation.Output) { o.Owner.GID = 3 },
		"JWT":                    func(o *rotation.Output) { o.JWT[0].Audience = []string{"b"} },
		"JWTBundleFile":          func(o *rotation.Output) { o.JWTBundleFile = "x" },
		"JWTBundleMode":          func(o *rotation.Output) { o.JWTBundleMode = 0o640 },
		"Reloads":                func(o *rotation.Output) { o.Reloads[0] = rotation.NewExecReloader([]string{"false"}, time.Second) },
		"CombinedFile":           func(o *rotation.Output) { o.CombinedFile = "x" },
		"CombinedOrder":          func(o *rotation.Output) { o.CombinedOrder = svid.ChainFirst },
		"Layout":                 func(o *rotation.Output) { o.Layout = rotation.LayoutSPIFFEFSDelivery },
		"BundleDir":              func(o *rotation.Output) { o.BundleDir = "x" },
		"PKCS12":                 func(o *rotation.Output) { o.PKCS12.TruststoreFile = "ts" },
		"Verify":                 func(o *rotation.Output) { o.Verify, _ = tlsprobe.New("tcp://127.0.0.1:6380") },
		"VerifyTimeout":          func(o *rotation.Output) { o.VerifyTimeout = time.Minute },
		"UnsafeWorldReadableKey": func(o *rotation.Output) { o.UnsafeWorldReadableKey = true },
	}
	require.Len(t, changes, reflectFields(rotation.Output{}), "a field of Output has no change in this test")
	for name, change := range changes {
		o := build()
		change(&o)
		require.False(t, build().Equal(o), "a change of %s is not seen", name)
	}
	// Reload order counts; a missing Verify is not a present one.
	o := build()
	o.Reloads[0], o.Reloads[1] = o.Reloads[1], o.Reloads[0]
	require.False(t, build().Equal(o))
	o = build()
	o.Verify = nil
	require.False(t, build().Equal(o))
	require.False(t, o.Equal(build()))
}

func reflectFields(v any) int { return reflect.TypeOf(v).NumField() }
