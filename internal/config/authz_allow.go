package config

import (
	"fmt"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/mtls"
)

// AllowKeys: allow lists the peer SPIFFE IDs a proxy accepts, as
// mtls.ParseAllow reads them (an ID, a prefix "/*" or a trust domain).
type AllowKeys struct {
	Allow []string `yaml:"allow"`
}

func (*AllowKeys) key() string { return "allow" }

func (k *AllowKeys) isSet() bool { return k.Allow != nil }

func (*AllowKeys) defaults() {}

// check: the entries' grammar is mtls's, reported entry by entry (at
// allow[i]'s line) by tlsproxy's Validate when the plan is made, in the
// same words as for `identity-agent proxy --allow`.
func (*AllowKeys) check(*validator, func(...any) []any) {}

// authorizer is mtls.ParseAllow's AllowList; an error names the first
// bad entry (allow[i]) in tlsproxy's Validate's words.
func (k *AllowKeys) authorizer() (mtls.Authorizer, error) {
	for i, e := range k.Allow {
		if err := mtls.CheckAllowEntry(e); err != nil {
			return nil, fielderr.Errorf(fmt.Sprintf("allow[%d]", i), "%q: %w", e, err)
		}
	}
	a, err := mtls.ParseAllow(k.Allow)
	if err != nil {
		return nil, &fielderr.Error{Field: "allow", Err: err}
	}
	return a, nil
}
