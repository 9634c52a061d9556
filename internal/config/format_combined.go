package config

import (
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// CombinedKeys: combined_file gets the PKCS#8 key and the chain in one
// PEM file (HAProxy crt, MongoDB certificateKeyFile, Postgres
// sslcert+sslkey in one, Python's load_cert_chain). Mode key_mode.
type CombinedKeys struct {
	CombinedFile string `yaml:"combined_file"`
	// CombinedOrder is key_first (default) or chain_first.
	CombinedOrder string `yaml:"combined_order"`
}

func (*CombinedKeys) defaults(*Output) {}

func (k *CombinedKeys) check(v *validator, p func(...any) []any, _ *Output) {
	if k.CombinedOrder != "" && k.CombinedFile == "" {
		v.errorf(p("combined_order"), "is set but combined_file is not")
	}
}

func (k *CombinedKeys) format(o *Output) (rotation.Format, error) {
	order, err := svid.ParseCombinedOrder(k.CombinedOrder)
	if err != nil {
		err = &rotation.FieldError{Field: "combined_order", Err: err}
	}
	if k.CombinedFile == "" {
		return nil, err
	}
	// With a bad order too, so that the file's own problems show as well.
	return &rotation.Combined{File: k.CombinedFile, Order: order, Mode: fs.FileMode(o.KeyMode)}, err
}
