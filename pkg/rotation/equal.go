package rotation

import (
	"reflect"
	"slices"
)

// Equal reports whether o and p are the same output: the same files,
// modes, owner, formats, verification and reloads, in the same order. A
// reload (or the Verify checker) is compared with its Equal(any) bool
// method when it has one, as the reloaders this package makes do;
// without one it equals only itself. A program that applies a new
// configuration (identity-agent's reload) replaces only outputs that are
// not Equal to the running ones.
func (o Output) Equal(p Output) bool {
	return o.Name == p.Name && o.Selector == p.Selector && o.Dir == p.Dir &&
		o.CertFile == p.CertFile && o.KeyFile == p.KeyFile && o.BundleFile == p.BundleFile &&
		o.IncludeFederated == p.IncludeFederated && o.IntermediatesInBundle == p.IntermediatesInBundle &&
		o.CertMode == p.CertMode && o.KeyMode == p.KeyMode && o.BundleMode == p.BundleMode &&
		o.Owner == p.Owner &&
		slices.EqualFunc(o.JWT, p.JWT, func(a, b JWTFile) bool {
			return a.File == b.File && a.Mode == b.Mode && slices.Equal(a.Audience, b.Audience)
		}) &&
		o.JWTBundleFile == p.JWTBundleFile && o.JWTBundleMode == p.JWTBundleMode &&
		slices.EqualFunc(o.Reloads, p.Reloads, func(a, b Reloader) bool { return sameValue(a, b) }) &&
		o.CombinedFile == p.CombinedFile && o.CombinedOrder == p.CombinedOrder && o.Layout == p.Layout &&
		o.BundleDir == p.BundleDir && o.PKCS12 == p.PKCS12 &&
		sameValue(o.Verify, p.Verify) && o.VerifyTimeout == p.VerifyTimeout &&
		o.UnsafeWorldReadableKey == p.UnsafeWorldReadableKey
}

// sameValue compares two reloaders or checkers: by a's Equal(any) bool
// when it has one, else by identity.
func sameValue(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if e, ok := a.(interface{ Equal(other any) bool }); ok {
		return e.Equal(b)
	}
	if !reflect.TypeOf(a).Comparable() || reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	return a == b
}

// Equal is true for a signal reload of the same process and signal.
func (r *signalReloader) Equal(other any) bool {
	o, ok := other.(*signalReloader)
	return ok && *r == *o
}

// Equal is true for the same command, timeout and kind.
func (r *execReloader) Equal(other any) bool {
	o, ok := other.(*execReloader)
	return ok && slices.Equal(r.argv, o.argv) && r.timeout == o.timeout && r.kind == o.kind && r.label == o.label
}

// Equal is true for the same unit, action and command settings.
func (r *systemdReloader) Equal(other any) bool {
	o, ok := other.(*systemdReloader)
	return ok && *r == *o
}

// Equal is true for the same label, restart flag and command settings.
func (r *launchdReloader) Equal(other any) bool {
	o, ok := other.(*launchdReloader)
	return ok && *r == *o
}
