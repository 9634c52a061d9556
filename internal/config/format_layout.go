package config

import (
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// LayoutKeys: layout "spiffe-fs-delivery" writes the directory as a SPIFFE
// Filesystem Delivery credential folder (key_mode for the credential
// bundle, bundle_mode for the trust bundles).
type LayoutKeys struct {
	Layout string `yaml:"layout"`
}

func (*LayoutKeys) defaults(*Output) {}

func (k *LayoutKeys) check(v *validator, p func(...any) []any, _ *Output) {
	switch k.Layout {
	case "", rotation.LayoutSPIFFEFSDelivery:
	default:
		v.errorf(p("layout"), "%q: want %q (or none)", k.Layout, rotation.LayoutSPIFFEFSDelivery)
	}
}

func (k *LayoutKeys) format(o *Output) (rotation.Format, error) {
	if k.Layout != rotation.LayoutSPIFFEFSDelivery {
		return nil, nil // another value is check's problem
	}
	return &rotation.FSDelivery{KeyMode: fs.FileMode(o.KeyMode), BundleMode: fs.FileMode(o.BundleMode)}, nil
}
