package agent

import (
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// traefikReloader regenerates Traefik's dynamic file from the output's
// files, which the rotation manager has written before reloads run.
func (a *Agent) traefikReloader(o config.Output, t *config.TraefikReload) (rotation.Reloader, error) {
	return newTraefikReloader(o, t, a.log.Named("traefik"))
}

// newTraefikReloader builds the reloader; it touches nothing, so NewPlan
// builds it too, for the checks only the traefik package knows.
func newTraefikReloader(o config.Output, t *config.TraefikReload, log *zap.Logger) (*traefik.Reloader, error) {
	opts := []traefik.Option{traefik.WithFileMode(t.Mode.Or(rotation.DefaultKeyMode)), traefik.WithLogger(log)}
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
	owner, err := resolveOwner(o.Owner)
	if err != nil {
		return nil, err
	}
	if owner.UID >= 0 || owner.GID >= 0 {
		opts = append(opts, traefik.WithOwner(owner.UID, owner.GID))
	}
	files := traefik.Files{
		Cert:   filepath.Join(o.Dir, o.CertFile),
		Key:    filepath.Join(o.Dir, o.KeyFile),
		Bundle: filepath.Join(o.Dir, o.BundleFile),
	}
	return traefik.NewReloader(t.File, files, opts...)
}
