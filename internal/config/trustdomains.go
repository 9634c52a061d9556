package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AllowTrustDomainWarnings flags proxy allow entries whose trust domain is
// named nowhere else in the file (`spiffe://exmaple.org/traefik` beside
// example.org everywhere else): legal, but a peer of a trust domain the
// agent has no bundle for can never connect, so it is most likely a typo.
// Only a file that names some other trust domain can tell; the running
// agent checks against its bundles (agent.unknownAllowTrustDomains, shown by status).
func (c *Config) AllowTrustDomainWarnings() []error {
	if c == nil || c.root == nil {
		return nil
	}
	named := map[string]int{} // trust domain → scalars naming it, allow entries included
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			if td := TrustDomainOf(n.Value); td != "" {
				named[td]++
			}
		}
		for _, k := range n.Content {
			walk(k)
		}
	}
	walk(c.root)
	inAllow := map[string]int{}
	for _, p := range c.Proxies {
		for _, a := range p.Allow {
			if td := TrustDomainOf(a); td != "" {
				inAllow[td]++
			}
		}
	}
	var warns []error
	for i, p := range c.Proxies {
		for j, a := range p.Allow {
			td := TrustDomainOf(a)
			if td == "" || named[td] > inAllow[td] {
				continue
			}
			others := make([]string, 0, len(named))
			for o := range named {
				if named[o] > inAllow[o] {
					others = append(others, o)
				}
			}
			if len(others) == 0 {
				continue
			}
			warns = append(warns, c.At(fmt.Sprintf("proxies[%d].allow[%d]", i, j),
				fmt.Errorf("%q: trust domain %q is named nowhere else in this file: a typo? (a peer is accepted only if the agent has its trust domain's bundle, its own or federated)", strings.TrimSpace(a), td)))
		}
	}
	return warns
}

// TrustDomainOf is the trust domain of a SPIFFE ID or allow entry
// ("spiffe://example.org/x", "spiffe://example.org/*",
// "spiffe://example.org"), lower-cased; "" if s is not one.
func TrustDomainOf(s string) string {
	s = strings.TrimSpace(s)
	const scheme = "spiffe://"
	if len(s) <= len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return ""
	}
	td, _, _ := strings.Cut(s[len(scheme):], "/")
	return strings.ToLower(td)
}
