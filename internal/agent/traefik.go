package agent

import (
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// traefikReloader regenerates Traefik's dynamic file from the output's
// files, which the rotation manager has written before reloads run.
// Building it touches nothing.
func traefikReloader(env Env, o config.Output, t *config.TraefikReload) (rotation.Reloader, error) {
	r, err := newTraefikReloader(o, t, env.logger().Named("traefik"))
	if err != nil {
		return nil, err
	}
	owner, _ := resolveOwner(o.Owner) // newTraefikReloader resolved it already
	return keyed[traefikKey]{r, traefikKey{*t, traefikFiles(o), owner}}, nil
}

// traefikKey is what a traefik reloader is built from.
type traefikKey struct {
	t     config.TraefikReload
	files traefik.Files
	owner atomicdir.Owner
}

func traefikFiles(o config.Output) traefik.Files {
	return traefik.Files{
		Cert:   filepath.Join(o.Dir, o.CertFile),
		Key:    filepath.Join(o.Dir, o.KeyFile),
		Bundle: filepath.Join(o.Dir, o.BundleFile),
	}
}

func newTraefikReloader(o config.Output, t *config.TraefikReload, log *zap.Logger) (*traefik.Reloader, error) {
	opts := []traefik.Option{traefik.WithFileMode(t.Mode.Or(config.DefaultKeyMode)), traefik.WithLogger(log)}
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
	return traefik.NewReloader(t.File, traefikFiles(o), opts...)
}
