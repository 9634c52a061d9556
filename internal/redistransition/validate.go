package redistransition

import (
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Defaults of the Redis transition, defined once: the agent's config, the
// `redis` subcommands, the Transition and the Sampler all use these.
const (
	// DefaultPlainPort and DefaultTLSPort are Redis's conventional ports.
	DefaultPlainPort = 6379
	DefaultTLSPort   = 6380
	// DefaultWindow is how long the plaintext port must see no client
	// before the step to D (plaintext off).
	DefaultWindow = 24 * time.Hour
	// DefaultSampleInterval is how often the agent samples CLIENT LIST.
	DefaultSampleInterval = 15 * time.Second
	// DefaultMaxSampleGap: samples further apart restart the window.
	DefaultMaxSampleGap = 10 * time.Minute
)

// portsOrDefault fills zero ports with DefaultPlainPort / DefaultTLSPort:
// the one place the server config, the Transition and the Sampler take
// them from.
func portsOrDefault(plain, tls int) (int, int) {
	if plain == 0 {
		plain = DefaultPlainPort
	}
	if tls == 0 {
		tls = DefaultTLSPort
	}
	return plain, tls
}

// ValidateAdminAddr checks an admin address as NewAdmin will, without
// connecting, and reports whether it is a TLS address (which NewAdmin then
// also needs the SVID and bundle sources and a server authorizer for).
func ValidateAdminAddr(addr string) (isTLS bool, err error) {
	// Stand-ins, so that target() checks the address alone.
	var none noSources
	t, err := AdminConfig{Addr: addr, SVIDs: none, Bundles: none, ServerAuthorizer: tlsconfig.AuthorizeAny()}.target()
	return t.tls, err
}

type noSources struct{}

func (noSources) GetX509SVID() (*x509svid.SVID, error) { return nil, errors.New("no SVID source") }
func (noSources) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return nil, errors.New("no bundle source")
}
