package config

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// TraefikReload regenerates a Traefik dynamic configuration file (with the
// SVID, key and bundle inline) so that Traefik's file provider, which
// watches that file and not the certificates, notices the rotation.
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
	if m := t.Mode.Or(rotation.DefaultKeyMode); m&0o007 != 0 {
		c.errorf(path("mode"), "%s lets every user read the inline private key; use 0600 or 0640", FileMode(m))
	} else if err := rotation.CheckMode(m, true, false); err != nil {
		c.errorf(path("mode"), "%v", err)
	}
}

// Build makes the traefik.Reloader of the output's cert, key and bundle,
// by their names: each reload is told their paths. It adds what only the
// traefik package checks (the file's extension, the transport name).
func (t *TraefikReload) Build(env ReloadEnv) (rotation.Reloader, error) {
	if !filepath.IsAbs(t.File) || t.Mode&0o007 != 0 {
		return nil, nil // the file's rules refused it
	}
	opts := []traefik.Option{traefik.WithFileMode(t.Mode.Or(rotation.DefaultKeyMode)), traefik.WithLogger(env.logger("traefik"))}
	if t.TransportName != "" {
		opts = append(opts, traefik.WithTransportName(t.TransportName))
	}
	if t.ServerName != "" {
		opts = append(opts, traefik.WithServerName(t.ServerName))
	}
	if t.PeerSpiffeID != "" {
		id, err := spiffeid.FromString(t.PeerSpiffeID)
		if err != nil {
			return nil, err
		}
		opts = append(opts, traefik.WithPeerSPIFFEID(id))
	}
	if t.TCP {
		opts = append(opts, traefik.WithTCP())
	}
	if env.Owner.UID >= 0 || env.Owner.GID >= 0 {
		opts = append(opts, traefik.WithOwner(env.Owner.UID, env.Owner.GID))
	}
	o := env.Output
	r, err := traefik.NewReloader(t.File, traefik.Files{Cert: o.CertFile, Key: o.KeyFile, Bundle: o.BundleFile}, opts...)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "traefik: "))
	}
	return r, nil
}

// ServiceNeeds: the dynamic file's directory is written.
func (t *TraefikReload) ServiceNeeds() ServiceNeeds {
	return ServiceNeeds{WritableDirs: []string{filepath.Dir(t.File)}}
}
