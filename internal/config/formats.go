package config

import (
	"errors"
	"io/fs"
	"reflect"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// Formats are an output's files beyond cert/key/bundle and JWT, and the
// check that a reload took. They are inlined into Output: the YAML keys
// sit beside cert_file. Files holding the key take key_mode, the others
// bundle_mode; no format has a mode of its own, so none is ever wider.
//
// Each embedded field is one format's keys: a type, in its own
// format_*.go file, that implements formatKeys (defaults, check, and the
// conversion to its rotation.Format). Adding a format is that file plus
// its one line here; the outputs' formats come in this order, after the
// PEM trio and before the JWT files.
type Formats struct {
	CombinedKeys  `yaml:",inline"`
	LayoutKeys    `yaml:",inline"`
	BundleDirKeys `yaml:",inline"`
	PKCS12Keys    `yaml:",inline"`

	// Verify, after each reload, that the service serves the new SVID.
	Verify *Verify `yaml:"verify"`
}

// formatKeys is one output format's keys in the file.
type formatKeys interface {
	// defaults fills the keys' defaults; o is the whole output.
	defaults(o *Output)
	// check reports problems of the keys' shape in the file that the
	// rotation.Format's own Check cannot see; p makes a key path below
	// the output.
	check(v *validator, p func(...any) []any, o *Output)
	// format converts the keys to the output's rotation.Format; nil, nil
	// when the output does not use the format. An error is a
	// *rotation.FieldError naming the key; a format returned with it is
	// still checked, so that all its problems show at once.
	format(o *Output) (rotation.Format, error)
}

// keys lists the formats' keys embedded in f, in field order (see
// embedded).
func (f *Formats) keys() []formatKeys { return embedded[formatKeys](f) }

// embedded lists the embedded fields of the struct s points to that
// implement T (through a pointer), in field order. Only the fields' Go
// types are looked at, never YAML tags: it is what makes an embedded
// field a table's one registration line (Formats, Authorizers).
func embedded[T any](s any) []T {
	v := reflect.ValueOf(s).Elem()
	var out []T
	for i := range v.NumField() {
		if !v.Type().Field(i).Anonymous {
			continue
		}
		if k, ok := v.Field(i).Addr().Interface().(T); ok {
			out = append(out, k)
		}
	}
	return out
}

// allFormats is every format's keys of o in output order: the PEM trio,
// the Formats, the JWT files.
func (o *Output) allFormats() []formatKeys {
	return append(append([]formatKeys{pemKeys{}}, o.keys()...), jwtKeys{})
}

// RotationFormats converts o's format keys into the rotation.Formats the
// output writes, in order (the PEM trio and the JWT files always, holding
// the output's modes, the others where configured). Problems are
// *rotation.FieldErrors naming the key, joined.
func (o *Output) RotationFormats() ([]rotation.Format, error) {
	var (
		out  []rotation.Format
		errs []error
	)
	for _, k := range o.allFormats() {
		f, err := k.format(o)
		errs = append(errs, err)
		if f != nil {
			out = append(out, f)
		}
	}
	// The traefik reload entries' dynamic files are formats too
	// (format_traefik.go).
	return append(out, traefikFormats(o)...), errors.Join(errs...)
}

// pemKeys are cert_file, key_file, bundle_file and the three modes: keys
// of Output itself (types.go), which other parts read too.
type pemKeys struct{}

func (pemKeys) defaults(*Output)                              {}
func (pemKeys) check(*validator, func(...any) []any, *Output) {}
func (pemKeys) format(o *Output) (rotation.Format, error) {
	return &rotation.PEM{
		CertFile: o.CertFile, KeyFile: o.KeyFile, BundleFile: o.BundleFile,
		CertMode: fs.FileMode(o.CertMode), KeyMode: fs.FileMode(o.KeyMode), BundleMode: fs.FileMode(o.BundleMode),
		IntermediatesInBundle: o.IntermediatesInBundle,
	}, nil
}

// jwtKeys are jwt and jwt_bundle_file (types.go).
type jwtKeys struct{}

func (jwtKeys) defaults(*Output)                              {}
func (jwtKeys) check(*validator, func(...any) []any, *Output) {}
func (jwtKeys) format(o *Output) (rotation.Format, error) {
	f := &rotation.JWT{BundleFile: o.JWTBundleFile, BundleMode: fs.FileMode(o.JWTBundleMode)}
	for _, j := range o.JWT {
		f.Tokens = append(f.Tokens, rotation.JWTFile{Audience: j.Audience, File: j.File, Mode: fs.FileMode(j.Mode)})
	}
	return f, nil
}

// Verify is where the service serves TLS, to check its certificate.
type Verify struct {
	// Address is tcp://host:port or unix:///path.
	Address string `yaml:"address"`
	// ServerName is the SNI to send (default none).
	ServerName string `yaml:"server_name"`
	// Timeout is how long after a reload the service may take to serve
	// the new certificate (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// validateFormats checks the format keys' shape in the file; their values
// and names are checked where they are consumed (each rotation.Format's
// Check and rotation.Output.Validate: names, modes, the PKCS#12 password
// file, verify's certificate; tlsprobe: the verify address).
func validateFormats(v *validator, p func(...any) []any, o Output) {
	for _, k := range o.allFormats() {
		k.check(v, p, &o)
	}
	if vf := o.Verify; vf != nil {
		if vf.Address == "" {
			v.errorf(p("verify", "address"), "is required (tcp://host:port or unix:///path)")
		}
		if vf.Timeout < 0 {
			v.errorf(p("verify", "timeout"), "must not be negative")
		}
	}
}

// defaultFormats fills every format's defaults of o.
func defaultFormats(o *Output) {
	for _, k := range o.allFormats() {
		k.defaults(o)
	}
}
