package config

import (
	"errors"
	"strings"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/mtls"
)

// Authorizers are a proxy's authorizer kinds: who may connect. They are
// inlined into Proxy, so a kind's YAML keys sit beside listen and target
// (`allow: [...]` today; a policy file next).
//
// Each embedded field is one kind's keys: a type, in its own authz_*.go
// file, that implements authzKeys (its keys, defaults, the file's rules
// and the build of its mtls.Authorizer). Adding a kind is that file plus
// its one line here. A proxy sets exactly one kind.
type Authorizers struct {
	AllowKeys `yaml:",inline"`
}

// authzKeys is one authorizer kind's keys in the file.
type authzKeys interface {
	// key names the kind in messages: its YAML key ("allow").
	key() string
	// isSet reports whether the proxy sets any of the kind's keys.
	isSet() bool
	// defaults fills the kind's defaults.
	defaults()
	// check reports problems of the kind's keys that its build cannot
	// see or that belong at a finer line; p makes a key path below the
	// proxy.
	check(v *validator, p func(...any) []any)
	// authorizer builds the kind's mtls.Authorizer: an mtls.Policy when
	// its decisions depend on content it read (a policy file), so that
	// the Plan's fingerprint of it changes when the content does. Errors
	// are *fielderr.Error naming the key below the proxy ("allow[2]").
	authorizer() (mtls.Authorizer, error)
}

// kinds lists the kinds embedded in a, in field order (see embedded).
func (a *Authorizers) kinds() []authzKeys { return embedded[authzKeys](a) }

// AuthorizerKinds are the YAML keys of the authorizer kinds, in table order.
func AuthorizerKinds() []string {
	var a Authorizers
	return authzKeyNames(a.kinds())
}

func authzKeyNames(kinds []authzKeys) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.key()
	}
	return out
}

// setKinds are the kinds of kinds that the proxy sets.
func setKinds(kinds []authzKeys) []authzKeys {
	var out []authzKeys
	for _, k := range kinds {
		if k.isSet() {
			out = append(out, k)
		}
	}
	return out
}

// AuthorizerKind names the kind the proxy sets ("allow"), "a+b" when it
// sets several, "" when none.
func (a *Authorizers) AuthorizerKind() string {
	return strings.Join(authzKeyNames(setKinds(a.kinds())), "+")
}

// Authorizer builds the authorizer of the one kind the proxy sets (see
// authzKeys.authorizer); nil, nil when it sets none (tlsproxy's Validate
// refuses that: "allow: at least one allowed SPIFFE ID is required").
// Errors name the key below the proxy, as *fielderr.Error; the file's
// check (config validate, run, reload) reports them at their lines.
func (a *Authorizers) Authorizer() (mtls.Authorizer, error) {
	return buildAuthz(a.kinds())
}

func buildAuthz(kinds []authzKeys) (mtls.Authorizer, error) {
	set := setKinds(kinds)
	switch len(set) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fielderr.Errorf(set[1].key(), "sets %s: one authorizer per proxy", strings.Join(authzKeyNames(set), " and "))
	}
	az, err := set[0].authorizer()
	if err != nil {
		var fe *fielderr.Error
		if !errors.As(err, &fe) {
			err = &fielderr.Error{Field: set[0].key(), Err: err}
		}
		return nil, err
	}
	return az, nil
}

func defaultAuthz(kinds []authzKeys) {
	for _, k := range kinds {
		k.defaults()
	}
}

// checkAuthz reports, each at its line: a proxy that sets several kinds
// (one line: the kinds' own rules wait), each set kind's own rules, and,
// when those hold, whether the kind builds (a bad allow entry, a policy
// file that cannot be read or parsed). The plan builds it again (the
// content it authorizes with is the content it read); a problem it finds
// that tlsproxy's Validate finds too is one line (agent drops the echo).
// A proxy that sets no kind is refused by tlsproxy's Validate ("allow: at
// least one allowed SPIFFE ID is required"), as before there were kinds.
func checkAuthz(v *validator, p func(...any) []any, kinds []authzKeys) {
	set := setKinds(kinds)
	if len(set) == 1 {
		before := len(v.errs)
		set[0].check(v, p)
		if len(v.errs) > before {
			return
		}
	}
	if _, err := buildAuthz(kinds); err != nil {
		var fe *fielderr.Error
		if errors.As(err, &fe) {
			v.errorf(append(p(), parseField(fe.Field)...), "%v", fe.Err)
		}
	}
}
