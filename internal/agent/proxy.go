package agent

import (
	"net"
	"time"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/unixsock"
	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// ProxySocketMode is the mode of a unix socket a proxy listens on: whoever
// can connect to a client-mode socket borrows this agent's identity.
const ProxySocketMode = 0o600

// NewProxy builds one configured proxy on src, presenting the SVID its
// spiffe_id or hint selects; run and `identity-agent proxy` both use it.
// Unix listen sockets are created by unixsock, never reachable at the
// umask's mode.
func NewProxy(pc config.Proxy, src *svid.Source, opts ...tlsproxy.Option) (*tlsproxy.Proxy, error) {
	return newProxy(proxyPlan(pc), src, opts...)
}

func newProxy(pp ProxyPlan, src *svid.Source, opts ...tlsproxy.Option) (*tlsproxy.Proxy, error) {
	opts = append([]tlsproxy.Option{tlsproxy.WithUnixListener(listenProxyUnix)}, opts...)
	return tlsproxy.New(pp.Config, src.X509SVIDSource(pp.Selector), src, opts...)
}

func listenProxyUnix(path string) (net.Listener, error) {
	return unixsock.Listen(path, ProxySocketMode)
}

// ProxyConfig maps a configured proxy to tlsproxy's Config.
func ProxyConfig(pc config.Proxy) tlsproxy.Config {
	tc := tlsproxy.Config{
		Name:                            pc.Name,
		Mode:                            tlsproxy.Mode(pc.Mode),
		Listen:                          pc.Listen,
		Target:                          pc.Target,
		HTTP:                            pc.HTTP,
		RewriteHost:                     pc.RewriteHost,
		MaxConns:                        pc.MaxConns,
		MaxHandshakes:                   pc.MaxHandshakes,
		MaxHandshakesPerSource:          pc.MaxHandshakesPerSource,
		HandshakeTimeout:                time.Duration(pc.HandshakeTimeout),
		IdleTimeout:                     time.Duration(pc.IdleTimeout),
		ConnectTimeout:                  time.Duration(pc.ConnectTimeout),
		DrainTimeout:                    time.Duration(pc.DrainTimeout),
		MaxConnLifetime:                 time.Duration(pc.MaxConnLifetime),
		UnsafeAllowNonLoopbackPlaintext: pc.UnsafeAllowNonLoopbackPlaintext,
	}
	// Who may connect: the authorizer of the proxy's kind (config's
	// authorizer table). One that does not build was reported at its line
	// by the file's check; here an allow list stays tlsproxy's sugar (its
	// Validate names each bad entry, in the words `proxy --allow` gets),
	// and any other kind refuses every peer.
	a, err := pc.Authorizer()
	switch {
	case err == nil && a != nil:
		tc.Authorizer = a
	case err == nil || pc.Allow != nil:
		tc.Allow = pc.Allow // none set: Validate's "at least one allowed SPIFFE ID"
	default:
		tc.Authorizer = mtls.Describe("refuses every peer ("+err.Error()+")", nil)
	}
	return tc
}
