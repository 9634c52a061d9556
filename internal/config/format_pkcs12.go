package config

import (
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// PKCS12Keys: pkcs12 keystore and truststore for Java and .NET.
type PKCS12Keys struct {
	PKCS12 *PKCS12 `yaml:"pkcs12"`
}

// PKCS12 names the PKCS#12 files and their password file.
type PKCS12 struct {
	KeystoreFile   string `yaml:"keystore_file"`   // key + chain; mode key_mode
	TruststoreFile string `yaml:"truststore_file"` // roots (federated with include_federated); mode bundle_mode
	// PasswordFile holds the password (one trailing newline is ignored);
	// read at every write, never logged.
	PasswordFile string `yaml:"password_file"`
}

func (*PKCS12Keys) defaults(*Output) {}

func (k *PKCS12Keys) check(v *validator, p func(...any) []any, _ *Output) {
	if c := k.PKCS12; c != nil && c.KeystoreFile == "" && c.TruststoreFile == "" {
		v.errorf(p("pkcs12"), "set keystore_file, truststore_file or both")
	}
}

func (k *PKCS12Keys) format(o *Output) (rotation.Format, error) {
	c := k.PKCS12
	if c == nil {
		return nil, nil
	}
	return &rotation.PKCS12{
		KeystoreFile: c.KeystoreFile, TruststoreFile: c.TruststoreFile, PasswordFile: c.PasswordFile,
		KeyMode: fs.FileMode(o.KeyMode), BundleMode: fs.FileMode(o.BundleMode),
	}, nil
}
