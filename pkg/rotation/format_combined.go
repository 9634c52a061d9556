package rotation

import (
	"fmt"
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// Combined writes the PKCS#8 key and the chain in one PEM file (HAProxy
// crt, MongoDB certificateKeyFile, Python's load_cert_chain): a reader on
// its own schedule can never pair a new certificate with an old key.
// Mode is key_mode in the agent's config; default 0600.
type Combined struct {
	File  string
	Order svid.CombinedOrder
	Mode  fs.FileMode
}

// Name implements Format.
func (f *Combined) Name() string { return "combined" }

// Files implements Format.
func (f *Combined) Files() []FormatFile { return names("combined_file", f.File) }

// HoldsKey implements Format.
func (f *Combined) HoldsKey() bool { return f.File != "" }

// Check implements Format.
func (f *Combined) Check(c FormatCheck) error {
	var err error
	switch f.Order {
	case svid.KeyFirst, svid.ChainFirst:
	default:
		err = fielderr.Errorf("combined_order", "%d: want key_first or chain_first", f.Order)
	}
	return joinDistinct(err, c.CheckMode("key_mode", orMode(f.Mode, DefaultKeyMode), true))
}

// Build implements Format.
func (f *Combined) Build(in FormatInput) ([]atomicdir.File, error) {
	if f.File == "" {
		return nil, nil
	}
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	data, err := svid.EncodeCombinedPEM(picked, f.Order)
	if err != nil {
		return nil, fmt.Errorf("combined_file %s: %w", f.File, err)
	}
	return []atomicdir.File{{Name: f.File, Data: data, Mode: orMode(f.Mode, DefaultKeyMode)}}, nil
}

// Equal reports whether g is a Combined with the same settings.
func (f *Combined) Equal(g Format) bool {
	o, ok := g.(*Combined)
	return ok && (f == o || f != nil && o != nil && *f == *o)
}
