package config

import (
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// BundleDirKeys: bundle_dir is a subdirectory of dir with one
// <trust-domain>.pem per trust domain, own and federated, never merged.
// Mode bundle_mode.
type BundleDirKeys struct {
	BundleDir string `yaml:"bundle_dir"`
}

func (*BundleDirKeys) defaults(*Output)                              {}
func (*BundleDirKeys) check(*validator, func(...any) []any, *Output) {}

func (k *BundleDirKeys) format(o *Output) (rotation.Format, error) {
	if k.BundleDir == "" {
		return nil, nil
	}
	return &rotation.BundleDir{Dir: k.BundleDir, Mode: fs.FileMode(o.BundleMode)}, nil
}
