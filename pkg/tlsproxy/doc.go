// Package tlsproxy is identity-agent's local mTLS proxy.
//
// A server-mode proxy accepts mTLS connections, verifies the client's
// X.509-SVID against the current trust bundles (federated trust domains
// included), authorizes its SPIFFE ID and forwards plaintext to a target on
// loopback or a unix socket. A client-mode proxy accepts plaintext on
// loopback or a unix socket and forwards it over mTLS, checking the
// server's SPIFFE ID. Services that cannot speak TLS (Ollama, a legacy
// redis:// client) thus get SPIFFE mTLS on the network without changing.
//
// Identity comes from go-spiffe sources (x509svid.Source and
// x509bundle.Source: a workloadapi.X509Source, identity-agent's
// svid.Source, or static go-spiffe values). Every handshake asks them for
// the SVID and bundles of that moment, so rotations apply to new
// connections while existing ones go on. To present a particular SVID
// (the config's spiffe_id or hint), pass a source that picks it, such as
// svid.Source.X509SVIDSource(selector).
//
// Who may connect is an mtls.Authorizer (Config.Authorizer): the allow
// list of Config.Allow is the short way to make one (mtls.ParseAllow), a
// policy engine another. Config.Equal compares authorizers by content
// (mtls.Fingerprint), so a reload can tell an edited policy.
//
// Peer verification runs in tls.Config.VerifyConnection, which crypto/tls
// calls on resumed sessions too; TLS session resumption between our own
// client and server proxies therefore never skips the bundle check or the
// allow list. Sessions are bound to the SVID the proxy presents, so after
// a rotation the next connection performs a full handshake with the new
// certificate.
//
// Safety by default: the plaintext side must be a loopback address,
// "localhost" or a unix socket unless Config.UnsafeAllowNonLoopbackPlaintext
// is set; TLS 1.2 is the minimum (1.3 is negotiated when the peer has it);
// an empty allow list is an error.
//
// Admission has two stages. Connections still in the TLS handshake hold a
// slot of their own pool (MaxHandshakes, at most MaxHandshakesPerSource
// per source address, cut at HandshakeTimeout); a full pool closes its
// least progressed connection, oldest first (sent nothing, as the
// kernel's receive queue confirms; else sent bytes not yet answered; else
// answered), rather than refusing the newcomer, so idle sockets cannot
// lock authorized clients out, even from their own address; no
// connection is shed before it is 100 ms old (the newcomer waits instead). Authenticated connections count against MaxConns; while it is
// reached new connections are reset at once. The limits are fitted to
// RLIMIT_NOFILE at Start. IdleTimeout (no byte in either direction),
// ConnectTimeout and a graceful Shutdown bounded by DrainTimeout complete
// the limits; Close stops at once.
//
// Update changes a running proxy: new connections use the new allow list,
// limits, timeouts and target. Established connections keep their target
// and timeouts but not their authorization: a changed allow list is
// re-run on the certificate each peer handshook with, and connections it
// no longer accepts are closed (TCP mode at once, HTTP mode after the
// request in flight, within DrainTimeout). MaxConnLifetime closes any
// connection that long after its handshake, the same way. The proxy
// listens on TCP itself; unix sockets come from the caller
// (WithUnixListener or WithListener), who decides their mode.
//
// Data path: plain sockets are read with read(2) straight into pooled
// 64 KiB buffers that are taken only once data is there; a tls.Conn is
// read into a 4 KiB per-direction buffer first and, when more is already
// decrypted or buffered, into a pooled buffer without blocking. TLS
// records of one chunk go out in one write(2), and received records are
// read ahead so several are decrypted per read(2). So a connection
// waiting for its peer holds no pooled buffer: what an idle connection
// costs is a few KiB per direction plus crypto/tls's own buffers (about
// 115 KiB for both proxies of a pair after a bulk transfer, measured in
// TestIdleConnsAreCheap). TCP_NODELAY is on (Go's default). splice(2)
// does not apply: one side of every connection is TLS in user space.
//
// Every rejected connection is logged once at Warn with the peer address,
// the SPIFFE ID it presented (if any) and a Cause, and counted in
// identity_agent_proxy_handshake_failures_total{proxy,cause}. See Stats for
// the other counters.
package tlsproxy
