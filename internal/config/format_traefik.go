package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// A `reload: - traefik: {file: F, ...}` entry (reload_traefik.go) is the
// Traefik dynamic file as a format of the output (traefik.Format: the base
// name of F in the output's dir, written with the set) plus the reload
// that re-points F, a symlink in Traefik's watched directory, at it
// (traefik.Linker). Traefik's file provider reloads only on an event named
// like its file, which the set's swap never produces (docs/SERVICE.md).

// traefikFormats are the Traefik formats of o's traefik reload entries, in
// order, each only when its entry is valid (the entry reports the others).
func traefikFormats(o *Output) []rotation.Format {
	var out []rotation.Format
	for j, r := range o.Reload {
		t, ok := r.Spec().(*TraefikReload)
		if !ok {
			continue
		}
		if f, _, err := t.parts(o, j); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// parts converts the entry (index j of o's reloads, for messages; -1 when
// unknown) into its format and its linker. The errors are the entry's,
// prefixed "traefik: ".
func (t *TraefikReload) parts(o *Output, j int) (*traefik.Format, *traefik.Linker, error) {
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
		Mode:                 t.Mode.Or(rotation.DefaultKeyMode),
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
	// rule of the config file, reported at its line (check); the others
	// are reported at the entry, without the format's field.
	if err := f.Check(rotation.FormatCheck{UnsafeWorldReadableKey: o.UnsafeWorldReadableKey}); err != nil {
		var msgs []error
		for _, e := range unjoin(err) {
			var fe *rotation.FieldError
			if errors.As(e, &fe) {
				if isModeField(fe.Field) {
					continue // reported at its line by check
				}
				e = fe.Err
			}
			msgs = append(msgs, e)
		}
		if len(msgs) > 0 {
			return nil, nil, fmt.Errorf("traefik: %w", errors.Join(msgs...))
		}
	}
	return f, &traefik.Linker{Link: t.File, File: f.File}, nil
}

// isModeField tells a traefik.Format error about its mode, which check
// reports at the entry's mode line, from the others.
func isModeField(field string) bool { return strings.HasSuffix(field, ".mode") }

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
