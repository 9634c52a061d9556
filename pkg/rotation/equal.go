package rotation

import (
	"reflect"
	"slices"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// Equal reports whether o and other are the same output: the same name,
// identity, directory, owner, formats with the same settings (a format's
// state, such as PKCS#12 encodings, does not count), the same reloads in
// the same order and the same verify check. The agent's reload keeps an
// output whose Output is Equal to the new one running untouched.
//
// Formats, Reloaders and ServedCheckers compare with their own
// Equal(other) bool method when they have one (every one of this package
// does), else by value when their type is comparable, else by identity.
func (o Output) Equal(other Output) bool {
	a, b := o.withDefaults(), other.withDefaults()
	return a.Name == b.Name && a.Selector == b.Selector && a.Dir == b.Dir &&
		a.IncludeFederated == b.IncludeFederated && ownerOrKeep(a.Owner) == ownerOrKeep(b.Owner) &&
		a.UnsafeWorldReadableKey == b.UnsafeWorldReadableKey && a.VerifyTimeout == b.VerifyTimeout &&
		slices.EqualFunc(a.Formats, b.Formats, equalFormat) &&
		slices.EqualFunc(a.Reloads, b.Reloads, equalReloader) &&
		equalChecker(a.Verify, b.Verify)
}

// ownerOrKeep is w, or {-1,-1} ("leave as is") for the zero Owner: the
// one place that rule lives (normalize, Equal).
func ownerOrKeep(w atomicdir.Owner) atomicdir.Owner {
	if w == (atomicdir.Owner{}) {
		return atomicdir.Owner{UID: -1, GID: -1}
	}
	return w
}

func equalFormat(a, b Format) bool {
	if e, ok := a.(interface{ Equal(Format) bool }); ok && a != nil {
		return e.Equal(b)
	}
	return sameValue(a, b)
}

func equalReloader(a, b Reloader) bool {
	if e, ok := a.(interface{ Equal(Reloader) bool }); ok && a != nil {
		return e.Equal(b)
	}
	return sameValue(a, b)
}

func equalChecker(a, b ServedChecker) bool {
	if e, ok := a.(interface{ Equal(ServedChecker) bool }); ok && a != nil {
		return e.Equal(b)
	}
	return sameValue(a, b)
}

// sameValue compares two values of an interface: nil only to nil, else
// the same dynamic type and, through one pointer, equal by ==; a value
// that == cannot compare (a slice inside) is equal only to itself.
func sameValue(a, b any) (equal bool) {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	if va.Kind() == reflect.Pointer {
		if va.IsNil() || vb.IsNil() || va.Pointer() == vb.Pointer() {
			return va.Pointer() == vb.Pointer()
		}
		va, vb = va.Elem(), vb.Elem()
	}
	if !va.Type().Comparable() {
		return false
	}
	// A comparable struct may still hold an interface whose dynamic
	// value is not: == panics then.
	defer func() {
		if recover() != nil {
			equal = false
		}
	}()
	return va.Interface() == vb.Interface()
}

// Equal reports whether other runs the same command with the same timeout.
func (r *execReloader) Equal(other Reloader) bool {
	o, ok := other.(*execReloader)
	return ok && r != nil && o != nil && slices.Equal(r.argv, o.argv) &&
		r.timeout == o.timeout && r.kind == o.kind && r.label == o.label
}
