package config

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// TraefikReload writes a Traefik dynamic configuration file (with the
// SVID, key and bundle inline) with the output's set and links File to it,
// so that Traefik's file provider, which watches that file and not the
// certificates, notices the rotation (format_traefik.go).
type TraefikReload struct {
	File          string `yaml:"file"`           // absolute path in Traefik's watched directory
	TransportName string `yaml:"transport_name"` // serversTransports name; default "spiffe"
	ServerName    string `yaml:"server_name"`
	// PeerSpiffeID is the one SPIFFE ID the backend must present
	// (Traefik's peerCertURI).
	PeerSpiffeID string   `yaml:"peer_spiffe_id"`
	TCP          bool     `yaml:"tcp"`  // a tcp serversTransport instead of http
	Mode         FileMode `yaml:"mode"` // default 0600: the file holds the private key
}

func (t *TraefikReload) applyDefaults() {
	if t.Mode == 0 {
		t.Mode = FileMode(rotation.DefaultKeyMode)
	}
}

func (t *TraefikReload) check(c reloadCheck) {
	if t.File == "" {
		c.errorf(path("file"), "is required")
	} else {
		c.abs("file", t.File)
	}
	if c.out.CertFile == "" || c.out.BundleFile == "" {
		c.errorf(nil, "needs the output to write cert_file, key_file and bundle_file")
	}
	if id := t.PeerSpiffeID; id != "" {
		if _, err := spiffeid.FromString(id); err != nil {
			c.errorf(path("peer_spiffe_id"), "%q: %v", id, err)
		}
	}
	// The mode rule is the dynamic file's own (traefik.Format.Check);
	// the file reports it at this entry's mode line.
	mf := traefik.Format{Mode: t.Mode.Or(rotation.DefaultKeyMode)}
	for _, e := range unjoin(mf.Check(rotation.FormatCheck{UnsafeWorldReadableKey: c.out.UnsafeWorldReadableKey})) {
		var fe *rotation.FieldError
		if errors.As(e, &fe) && isModeField(fe.Field) {
			c.errorf(path("mode"), "%v", fe.Err)
		}
	}
}

// Build makes the entry's reload, the traefik.Linker that re-points File
// at the dynamic file written with the output's set (its format:
// format_traefik.go), and adds what only the traefik package checks (the
// file's extension, the transport name) and the rule of the directory the
// link is made in (atomicdir.CheckLinkDir), when it exists.
func (t *TraefikReload) Build(env ReloadEnv) (rotation.Reloader, error) {
	if !filepath.IsAbs(t.File) {
		return nil, nil // the file's rules refused it
	}
	_, l, err := t.parts(&env.Output, -1)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "traefik: "))
	}
	// The Linker applies the same rule on every reload, to the directory
	// it has opened; a path this user cannot look at is not a verdict.
	var de *atomicdir.DirError
	if err := atomicdir.CheckLinkDir(filepath.Dir(t.File)); errors.As(err, &de) {
		return nil, &rotation.FieldError{Field: "file", Err: de}
	}
	return l, nil
}

// ServiceNeeds: the dynamic file's directory is written.
func (t *TraefikReload) ServiceNeeds() ServiceNeeds {
	return ServiceNeeds{WritableDirs: []string{filepath.Dir(t.File)}}
}
