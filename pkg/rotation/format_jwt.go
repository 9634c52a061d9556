package rotation

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// JWTFile asks for a JWT-SVID for Audience written to File (a base name in
// the output's Dir). Mode defaults to 0600.
type JWTFile struct {
	Audience []string
	File     string
	Mode     fs.FileMode
}

// JWT writes JWT-SVIDs, one file per entry of Tokens (refreshed at half
// their lifetime and on every X.509 push), and the JWT bundles as a JWKS
// in BundleFile (with the output's IncludeFederated, every trust
// domain's; otherwise the output's own). BundleMode defaults to 0644.
type JWT struct {
	Tokens     []JWTFile
	BundleFile string
	BundleMode fs.FileMode
}

// Name implements Format.
func (f *JWT) Name() string { return "jwt" }

// Files implements Format: the bundle first, then the tokens.
func (f *JWT) Files() []FormatFile {
	out := names("jwt_bundle_file", f.BundleFile)
	for i, j := range f.Tokens {
		out = append(out, names(fmt.Sprintf("jwt[%d].file", i), j.File)...)
	}
	return out
}

// HoldsKey implements Format: a token is a secret, but no X.509 key.
func (f *JWT) HoldsKey() bool { return false }

// JWTFiles implements TokenFormat.
func (f *JWT) JWTFiles() []JWTFile { return f.Tokens }

// Check implements Format.
func (f *JWT) Check(c FormatCheck) error {
	errs := []error{c.CheckMode("jwt_bundle_mode", orMode(f.BundleMode, DefaultJWTBundleMode), false)}
	for i, j := range f.Tokens {
		p := fmt.Sprintf("jwt[%d]", i)
		if len(j.Audience) == 0 {
			errs = append(errs, fielderr.Errorf(p+".audience", "at least one audience is required"))
		}
		if j.File == "" {
			errs = append(errs, fielderr.Errorf(p+".file", "is required"))
		}
		errs = append(errs, c.CheckMode(p+".mode", orMode(j.Mode, DefaultJWTMode), true))
	}
	return joinDistinct(errs...)
}

// Build implements Format.
func (f *JWT) Build(in FormatInput) ([]atomicdir.File, error) {
	var files []atomicdir.File
	for i, jf := range f.Tokens {
		t, err := in.Token(i)
		if err != nil {
			return nil, err
		}
		files = append(files, atomicdir.File{Name: jf.File, Data: []byte(t.Marshal() + "\n"), Mode: orMode(jf.Mode, DefaultJWTMode)})
	}
	if f.BundleFile != "" {
		data, err := f.jwks(in)
		if err != nil {
			return nil, err
		}
		files = append(files, atomicdir.File{Name: f.BundleFile, Data: data, Mode: orMode(f.BundleMode, DefaultJWTBundleMode)})
	}
	return files, nil
}

// jwks encodes the JWT bundles the output asks for.
func (f *JWT) jwks(in FormatInput) ([]byte, error) {
	set := in.JWTBundles
	if set == nil || set.Len() == 0 {
		// They come on their own stream, often just after the X.509 context.
		return nil, fmt.Errorf("jwt bundle file %s: %w: no JWT bundles received yet", f.BundleFile, errNotReady)
	}
	var bundles []*jwtbundle.Bundle
	if in.IncludeFederated {
		bundles = set.Bundles()
	} else {
		td, err := in.TrustDomain()
		if err != nil {
			return nil, fmt.Errorf("jwt bundle file %s: %w", f.BundleFile, err)
		}
		b, ok := set.Get(td)
		if !ok {
			return nil, fmt.Errorf("jwt bundle file %s: no JWT bundle for trust domain %s", f.BundleFile, td)
		}
		bundles = []*jwtbundle.Bundle{b}
	}
	data, err := svid.EncodeJWKS(bundles...)
	if err != nil {
		return nil, fmt.Errorf("jwt bundle file %s: %w", f.BundleFile, err)
	}
	return data, nil
}

// Equal reports whether g is a JWT with the same settings.
func (f *JWT) Equal(g Format) bool {
	o, ok := g.(*JWT)
	if !ok || f == nil || o == nil {
		return ok && f == o
	}
	return f.BundleFile == o.BundleFile && f.BundleMode == o.BundleMode &&
		slices.EqualFunc(f.Tokens, o.Tokens, func(a, b JWTFile) bool {
			return a.File == b.File && a.Mode == b.Mode && slices.Equal(a.Audience, b.Audience)
		})
}

// joinDistinct joins the non-nil errors, each message once: formats that
// share a mode setting (key_mode) report its problem once.
func joinDistinct(errs ...error) error {
	var out []error
	seen := map[string]bool{}
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, e := range flatten(err) {
			if !seen[e.Error()] {
				seen[e.Error()] = true
				out = append(out, e)
			}
		}
	}
	return errors.Join(out...)
}

// flatten lists the errors an errors.Join holds, or err itself.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
