package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// A `reload: - traefik: {file: F, ...}` entry is the Traefik dynamic file
// as a format of the output (traefik.Format: base name of F in the
// output's dir, written with the set) plus the reload that re-points F, a
// symlink in Traefik's watched directory, at it (traefik.Linker).

// traefikReloader is the reload of a traefik entry: the Linker.
func (a *Agent) traefikReloader(o config.Output, t *config.TraefikReload) (rotation.Reloader, error) {
	_, l, err := traefikParts(o, -1, t)
	return l, err
}

// newTraefikReloader checks what the traefik package checks beyond the
// file's rules, as NewPlan reports it (the messages name F).
func newTraefikReloader(o config.Output, t *config.TraefikReload, _ *zap.Logger) (*traefik.Linker, error) {
	_, l, err := traefikParts(o, -1, t)
	return l, err
}

// traefikFormats are the Traefik formats of o's traefik reload entries,
// in order, each added only when its entry is valid (NewPlan reports the
// others at the entry).
func traefikFormats(o config.Output) []rotation.Format {
	var out []rotation.Format
	for j, r := range o.Reload {
		if r.Traefik == nil {
			continue
		}
		if f, _, err := traefikParts(o, j, r.Traefik); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// traefikParts converts one traefik entry (index j of o's reloads, for
// messages; -1 when unknown) into its format and its linker.
func traefikParts(o config.Output, j int, t *config.TraefikReload) (*traefik.Format, *traefik.Linker, error) {
	switch ext := filepath.Ext(t.File); {
	case !filepath.IsAbs(t.File):
		return nil, nil, fmt.Errorf("traefik: dynamic file %q must be an absolute path", t.File)
	case ext != ".yml" && ext != ".yaml":
		return nil, nil, fmt.Errorf("traefik: dynamic file %s must end in .yml or .yaml (Traefik picks the format from the extension)", t.File)
	case o.Dir != "" && filepath.Clean(filepath.Dir(t.File)) == filepath.Clean(o.Dir):
		return nil, nil, fmt.Errorf("traefik: dynamic file %s is in the output's dir: name a file in the directory Traefik's file provider watches; the agent links it to the copy in the output's set", t.File)
	}
	f := &traefik.Format{
		File:                 filepath.Base(t.File),
		TransportName:        t.TransportName,
		ServerName:           t.ServerName,
		TCP:                  t.TCP,
		IntermediatesInRoots: o.IntermediatesInBundle,
		Mode:                 t.Mode.Or(config.DefaultKeyMode),
		Field:                "traefik",
	}
	if j >= 0 {
		f.Field = fmt.Sprintf("reload[%d].traefik", j)
	}
	if t.PeerSpiffeID != "" {
		id, err := spiffeid.FromString(t.PeerSpiffeID)
		if err != nil {
			return nil, nil, err
		}
		f.PeerSPIFFEID = id
	}
	// The rules of the file itself live in the format. Its mode is also a
	// rule of the config file, reported there at its line; the others are
	// reported at the entry, without the format's field.
	if err := f.Check(rotation.FormatCheck{UnsafeWorldReadableKey: o.UnsafeWorldReadableKey}); err != nil {
		var msgs []error
		for _, e := range unjoin(err) {
			var fe *rotation.FieldError
			if errors.As(e, &fe) {
				if strings.HasSuffix(fe.Field, ".mode") {
					continue
				}
				e = fe.Err
			}
			msgs = append(msgs, e)
		}
		if len(msgs) > 0 {
			return nil, nil, fmt.Errorf("traefik: %w", errors.Join(msgs...))
		}
	}
	return f, &traefik.Linker{Link: t.File, Target: filepath.Join(o.Dir, f.File)}, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
